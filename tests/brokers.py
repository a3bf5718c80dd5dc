"""A real Mosquitto broker for tests: started on free ports, stoppable and restartable, with
optional password auth and a TLS listener using certificates made for the test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(d: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=edge-agent test CA",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


class Broker:
    def __init__(self, d: Path, users: dict[str, str] | None = None, tls: bool = False, acl: str | None = None):
        if not shutil.which("mosquitto"):
            pytest.skip("mosquitto is not installed (scripts/run-tests installs it)")
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.users = users or {}
        self.certs = make_certs(d / "certs") if tls else None
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {d}/", "log_dest stderr"]
        if os.geteuid() == 0:
            lines.append(
                "user root"
            )  # as root mosquitto would switch to 'mosquitto', which cannot read the test's files
        if self.users:
            pw = d / "passwd"
            pw.write_text("")
            for u, p in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), u, p], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
            if acl is not None:
                (d / "acl").write_text(acl)
                lines.append(f"acl_file {d / 'acl'}")
        else:
            lines += ["allow_anonymous true"]
        if tls:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.certs['ca']}",
                f"certfile {self.certs['cert']}",
                f"keyfile {self.certs['key']}",
            ]
        self.conf = d / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None
        self.log = d / "mosquitto.log"

    def start(self) -> "Broker":
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=open(self.log, "ab")
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-800:]}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture()
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture()
def secure_broker(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    b = Broker(tmp_path / "secure", users={"edge": "s3cret-pass"}, tls=True).start()
    yield b
    b.stop()


def wait_for(pred, timeout: float = 20.0) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds have passed."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


class Subscriber:
    """A paho 2.x subscriber that records (topic, payload, retain) in arrival order."""

    def __init__(
        self,
        port: int,
        topic: str = "#",
        client_id: str | None = None,
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
    ):
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.connected = threading.Event()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sub-{port}-{time.monotonic_ns()}",
            clean_session=not persistent,
        )
        self.topic = topic

        def on_connect(c, u, f, rc, p):
            c.subscribe(self.topic, qos=1)
            self.connected.set()

        self.c.on_connect = on_connect
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.c.reconnect_delay_set(0.2, 1)
        if username:
            self.c.username_pw_set(username, password)
        self.c.connect_async("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        assert self.connected.wait(10), "test subscriber could not connect"
        time.sleep(0.2)

    def on(self, suffix: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, pred, timeout: float = 20.0) -> bool:
        return wait_for(pred, timeout)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
