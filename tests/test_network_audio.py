"""Network audio inputs against real servers on 127.0.0.1: GStreamer's RTSP server, ffmpeg's HTTP
server, a raw PCM sender and a Wyoming microphone server from the ``wyoming`` package. An anomalous
clip served by each raises an alarm; servers killed and started again are reconnected to; garbage
is a clear state and log line; credentials never show; no decoder outlives the agent."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections import defaultdict

import pytest

from edge_agent.config import parse_config
from edge_agent.runtime.sink import Sink
from edge_agent.state.paths import bank_path
from tests.agentproc import AgentProcess
from tests.conftest import DEMO
from tests.netservers import RTSP, FFmpegHTTP, Garbage, RawTCP, WyomingMic, ffmpeg_children, need_ffmpeg
from tests.test_run_replay import cli

ANOMALY = DEMO / "replay" / "02_anomaly_id_00_00000002.wav"
RAW = {"format": "s16le", "rate": 16000, "channels": 1}


class _Record(Sink):
    def __init__(self):
        self.lock = threading.Lock()
        self.states: dict[str, list[dict]] = defaultdict(list)
        self.starts: dict[str, int] = defaultdict(int)
        self.windows: dict[str, list[float]] = defaultdict(list)

    def handle(self, kind, machine, p):
        with self.lock:
            if kind == "state":
                self.states[machine].append(p)
            elif kind == "alarm" and p["event"] == "start":
                self.starts[machine] += 1

    def window(self, ev):
        with self.lock:
            self.windows[ev.machine].append(time.monotonic())

    def last_state(self, m) -> dict:
        with self.lock:
            return self.states[m][-1] if self.states[m] else {}


def _wait(cond, timeout: float) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def _state_for(enrolled, tmp_path, machines) -> str:
    """A state dir where each machine has the enrolled fan's bank."""
    st = tmp_path / "st"
    for m in machines:
        bank_path(st, m).parent.mkdir(parents=True)
        shutil.copy(bank_path(enrolled, "fan01"), bank_path(st, m))
    return str(st)


def _input(server, **extra) -> dict:
    inp = {"url": server.url, "silence_seconds": 2.0, "reconnect_max_seconds": 2.0, **extra}
    if isinstance(server, RawTCP):
        inp["raw"] = RAW
    return inp


def test_each_scheme_alarms_reconnects_after_a_restart_and_leaves_no_decoder(sensitive, tmp_path):
    from edge_agent.runtime.daemon import build_daemon

    need_ffmpeg()
    servers = {"cam": RTSP(ANOMALY), "radio": FFmpegHTTP(ANOMALY), "pcm": RawTCP(ANOMALY), "mic": WyomingMic(ANOMALY)}
    for s in servers.values():
        s.start()
    cfg = parse_config(
        {
            "state_dir": _state_for(sensitive, tmp_path, servers),
            "engine": "cpu",
            "status_interval_seconds": 1e9,
            "evidence": {"enabled": False},
            "machines": {m: {"input": _input(s)} for m, s in servers.items()},
        }
    )
    rec = _Record()
    agent = build_daemon(cfg, console=False, health=False, sinks=(rec,)).agent
    th = threading.Thread(target=agent.run, daemon=True)
    th.start()
    try:
        assert _wait(lambda: all(rec.starts[m] for m in servers), 60), dict(rec.starts)
        for m in servers:
            assert rec.last_state(m)["input"] == {"online": True, "address": servers[m].url, "error": None}
        for s in servers.values():
            s.stop()
        assert _wait(lambda: all(rec.last_state(m).get("state") == "no_audio" for m in servers), 20), {
            m: rec.last_state(m).get("reason") for m in servers
        }
        for m in servers:
            p = rec.last_state(m)
            assert "no audio frames" in p["reason"] and not p["input"]["online"], p
        assert _wait(lambda: all(agent.streams[m].source.error for m in servers), 10)
        words = {m: agent.streams[m].source.error for m in servers}
        assert all("Traceback" not in w for w in words.values()), words
        assert "connection refused" in words["mic"], words
        back = time.monotonic()
        for s in servers.values():
            s.start()
        # capped back-off (2 s), then a fresh window from each machine
        assert _wait(lambda: all(rec.windows[m] and rec.windows[m][-1] > back for m in servers), 30), {
            m: agent.streams[m].source.error for m in servers
        }
        assert all(rec.last_state(m)["state"] != "no_audio" for m in servers)
    finally:
        agent.stop()
        th.join(30)
        for s in servers.values():
            s.stop()
    assert not th.is_alive()
    for s in servers.values():  # the agent's decoders (they write to pipe:1) are gone
        assert not [p for p in ffmpeg_children(f":{s.port}") if p != (s.proc.pid if s.proc else None)]


def test_a_sigkilled_agent_leaves_no_decoder_behind(sensitive, tmp_path):
    need_ffmpeg()
    server = FFmpegHTTP(ANOMALY).start()
    cfg = tmp_path / "c.yaml"
    st = _state_for(sensitive, tmp_path, ["radio"])
    cfg.write_text(f"state_dir: {st}\nengine: cpu\nmachines:\n  radio:\n    input: {{url: '{server.url}'}}\n")
    agent = AgentProcess("run", "--config", cfg)
    try:
        assert agent.wait_for("receiving audio from", 30, stderr=True), agent.err[-20:]
        decoders = [p for p in ffmpeg_children(f":{server.port}") if p != server.proc.pid]
        assert len(decoders) == 1
        agent.p.send_signal(signal.SIGKILL)
        agent.finish(10)
        assert _wait(lambda: not [p for p in ffmpeg_children(f":{server.port}") if p != server.proc.pid], 5)
    finally:
        agent.kill()
        server.stop()


def test_garbage_a_missing_server_and_credentials_are_said_in_words(sensitive, tmp_path, caplog):
    from edge_agent.runtime.daemon import build_daemon

    need_ffmpeg()
    garbage = Garbage().start()
    not_audio = Garbage(text=b"GET lost\r\n").start()
    secret = "s3cret-Pw/with:odd@chars"
    (tmp_path / "pw").write_text(secret + "\n")
    closed = Garbage()  # a port nothing listens on
    machines = {
        "wyo": {"url": garbage.url},
        "http": {"url": f"http://127.0.0.1:{not_audio.port}/x"},
        "cam": {"url": f"rtsp://127.0.0.1:{closed.port}/x", "username": "admin", "password_file": str(tmp_path / "pw")},
    }
    cfg = parse_config(
        {
            "state_dir": _state_for(sensitive, tmp_path, machines),
            "engine": "cpu",
            "status_interval_seconds": 1e9,
            "machines": {m: {"input": {**inp, "silence_seconds": 1.0}} for m, inp in machines.items()},
        }
    )
    rec = _Record()
    agent = build_daemon(cfg, console=False, health=False, sinks=(rec,)).agent
    th = threading.Thread(target=agent.run, daemon=True)
    try:
        with caplog.at_level("DEBUG"):
            th.start()
            assert _wait(lambda: all(rec.last_state(m).get("state") == "no_audio" for m in machines), 20)
            assert _wait(lambda: all(agent.streams[m].source.error for m in machines), 20)
            words = {m: agent.streams[m].source.error for m in machines}
            assert "not the Wyoming protocol" in words["wyo"], words
            assert words["http"] and "Traceback" not in words["http"], words
            assert "connection refused" in words["cam"].lower(), words
            time.sleep(1.0)
    finally:
        agent.stop()
        th.join(30)
        garbage.stop()
        not_audio.stop()
    text = caplog.text + repr(dict(rec.states))
    assert "not the Wyoming protocol" in caplog.text
    assert secret not in text and "s3cret" not in text, "a password reached a log line or a payload"
    assert rec.last_state("cam")["input"]["address"] == f"rtsp://127.0.0.1:{closed.port}/x"


def test_calibrate_records_from_a_url(tmp_path):
    need_ffmpeg()
    normal = DEMO / "replay" / "01_normal_id_00_00000018.wav"
    server = WyomingMic(normal).start()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'st'}\nmachines:\n  mic:\n    input: {{url: '{server.url}'}}\n")
    try:
        r = cli("calibrate", "--machine", "mic", "--config", cfg, "--seconds", "8", "--no-plot", "--percentile", "0.9")
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    assert bank_path(tmp_path / "st", "mic").is_file()


def test_probe_says_what_a_url_carries(tmp_path):
    need_ffmpeg()
    http, mic = FFmpegHTTP(ANOMALY).start(), WyomingMic(ANOMALY).start()
    try:
        r = cli("probe", http.url)
        assert r.returncode == 0 and "audio  mp3" in r.stdout and "16000 Hz" in r.stdout, r.stdout + r.stderr
        r = cli("probe", mic.url)
        assert r.returncode == 0 and "pcm 16-bit" in r.stdout and "1 channel" in r.stdout, r.stdout + r.stderr
    finally:
        http.stop()
        mic.stop()
    r = cli("probe", http.url)  # nothing listens any more
    assert r.returncode == 2 and "Connection refused" in r.stderr and "Traceback" not in r.stderr
    r = cli("probe", "rtsp://admin:pw@cam1/s")
    assert r.returncode == 2 and "password_file" in r.stderr


@pytest.mark.parametrize(
    "inp,words",
    [
        ({"url": "rtsp://admin:hunter2@cam1/stream"}, "holds a password"),
        ({"url": "tcp://10.0.0.7:5000"}, "raw PCM"),
        ({"url": "wyoming://10.0.0.8"}, "needs a port"),
        ({"url": "rtmp://x/y"}, "is not one of"),
        ({"url": "http://h/x", "device": 1}, "not device and url"),
    ],
)
def test_network_inputs_are_checked_at_load(tmp_path, inp, words):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"state_dir": str(tmp_path), "machines": {"m": {"input": inp}}}))
    r = cli("run", "--config", cfg)
    assert r.returncode == 2 and "machines.m.input" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert words in r.stderr, r.stderr
    assert "hunter2" not in r.stderr
