"""Reliability end to end (real Mosquitto, real clips): acknowledgements matched only to what the
outbox handed over, a broker out of reach said loudly, alarms closed on stop and after a crash,
backlog before state on reconnect, and bad input that used to crash, spin or say nothing."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.audio.wavio import read_wav, write_wav
from edge_agent.config import parse_config
from edge_agent.publish.mqtt import MQTTPublisher
from edge_agent.publish.outbox import Outbox
from edge_agent.state.lock import StateDirInUse, StateLock
from tests.agentproc import AgentProcess
from tests.brokers import Subscriber, broker, free_port  # noqa: F401 - fixture
from tests.brokers import wait_for as _wait
from tests.conftest import DEMO
from tests.test_mqtt import _alarm, _publisher
from tests.test_run_replay import cli

MODEL = {"name": "default", "version": "1", "sha256": "ab" * 32}


# -- 1. acknowledgements -----------------------------------------------------------------------
def test_rows_wait_for_their_own_puback_across_the_message_id_wrap(broker, tmp_path):  # noqa: F811
    sub = Subscriber(broker.port, "edge-agent/n1/+/alarm", client_id="wrap-sub", persistent=True)
    pub = _publisher(broker.port, tmp_path / "st", states=lambda: [(m, {"state": "normal"}) for m in ("m1", "m2")])
    pub.start()
    try:
        assert pub.connected.wait(10)
        time.sleep(1.0)  # status, discovery and states are acknowledged (mids 1..n)
        pub.client._last_mid = 65532  # as after 65,532 publishes: the next ids wrap to 1, 2, ...
        os.kill(broker.proc.pid, signal.SIGSTOP)  # the broker takes the messages but acknowledges nothing
        try:
            sent = [_alarm("m1", i) for i in range(8)]
            for p in sent:
                pub.handle("alarm", "m1", p)
            time.sleep(2.0)
            assert pub.outbox.depth() == 8, "rows were deleted without their PUBACK"
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        assert _wait(lambda: pub.outbox.depth() == 0, 30)
        ids = {p["event_id"] for p in sent}
        assert sub.wait_for(lambda: {json.loads(m)["event_id"] for _, m, _ in sub.messages} >= ids, 20)
    finally:
        pub.close()
        sub.close()


# -- 2. a broker out of reach ------------------------------------------------------------------
@pytest.mark.parametrize(
    "host,expect", [("127.0.0.1", "connection refused"), ("no-such-host.invalid", "cannot resolve the host name")]
)
def test_an_unreachable_broker_is_reported_in_logs_status_metrics_and_healthcheck(tmp_path, caplog, host, expect):
    from edge_agent.health.check import check
    from edge_agent.health.monitor import start_metrics
    from edge_agent.model.bundle import Bundle
    from edge_agent.runtime.agent import Agent, stream_state
    from edge_agent.runtime.daemon import open_agent_engine, open_streams

    port, mport = free_port(), free_port()  # nothing listens on `port`
    cfg = parse_config(
        {
            "node_id": "n1",
            "state_dir": str(tmp_path / "st"),
            "engine": "cpu",
            "machines": {"fan01": {"input": {"file": str(DEMO / "replay"), "realtime": True, "loop": True}}},
            "mqtt": {"host": host, "port": port},
        }
    )
    bundle = Bundle.load(cfg.model)
    streams, info = open_streams(cfg, bundle), bundle.describe()
    states = lambda: [(m, stream_state(s, info)) for m, s in streams.items()]  # noqa: E731
    pub = MQTTPublisher(cfg, Outbox(tmp_path / "st" / "outbox.sqlite"), ["fan01"], info, states=states)
    agent = Agent(cfg, bundle, open_agent_engine(cfg, bundle), streams, [pub])
    server = start_metrics(streams, agent.faults, f"127.0.0.1:{mport}", pub)
    with caplog.at_level(logging.INFO, logger="edge_agent.mqtt"):
        pub.handle("alarm", "fan01", _alarm("fan01", 1))  # waiting before the first attempt
        pub.start()
        try:
            assert _wait(lambda: pub.connect_failures >= 2, 20), pub.last_error
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and expect in errors[0] and "1 event(s) waiting in the outbox" in errors[0], errors
            line = agent.status_lines()[0]
            assert (
                line.startswith(f"mqtt: NOT CONNECTED to {host}:{port}")
                and expect in line
                and "outbox 1 waiting" in line
            )
            ok, msg = check(f"http://127.0.0.1:{mport}/metrics", broker_grace=0.5)
            assert not ok and "the MQTT broker has been unreachable" in msg and "1 event(s) waiting" in msg, msg
            ok, msg = check(f"http://127.0.0.1:{mport}/metrics", broker_grace=600)
            assert ok and "mqtt NOT CONNECTED" in msg and "outbox 1" in msg, msg
        finally:
            pub.close(deadline=0.5)
            server.shutdown()


# -- 3. open alarms ----------------------------------------------------------------------------
def _linked_state(banks: Path, d: Path) -> Path:
    d.mkdir()
    (d / "machines").symlink_to(banks / "machines")
    return d


def _anomalous_only(d: Path) -> Path:
    d.mkdir()
    for f in sorted((DEMO / "replay").glob("*anomaly*")):
        (d / f.name).symlink_to(f)
    return d


def _config(path: Path, state: Path, replay: Path, port=None, loop=True, extra_input="") -> Path:
    """The clips as one input (continuous): an alarm may outlast a file, as on a live machine."""
    extra_input = ", continuous: true" + extra_input
    mqtt = f"mqtt: {{host: 127.0.0.1, port: {port}, keepalive: 5, score_interval_seconds: 0}}\n" if port else ""
    path.write_text(
        f"node_id: n1\nstate_dir: {state}\nengine: cpu\nstatus_interval_seconds: 1000\nmachines:\n  fan01:\n"
        f"    input: {{file: {replay}, realtime: false, loop: {str(loop).lower()}{extra_input}}}\n{mqtt}"
    )
    return path


def _alarm_id(line: str) -> str:
    return line.split("ALARM ", 1)[1].split()[1]


def test_sigterm_during_an_alarm_ends_it_and_the_state(broker, calibrated, tmp_path):  # noqa: F811
    state = _linked_state(calibrated, tmp_path / "st")
    cfg = _config(tmp_path / "c.yaml", state, _anomalous_only(tmp_path / "anom"), broker.port)
    sub = Subscriber(broker.port, "edge-agent/n1/#")
    agent = AgentProcess("run", "--config", cfg)
    try:
        assert agent.wait_for("ALARM START"), agent.err[-20:]
        agent.p.send_signal(signal.SIGTERM)
        assert agent.finish() == 0, agent.err[-20:]
    finally:
        agent.kill()
    start = next(ln for ln in agent.out if "ALARM START" in ln)
    end = [ln for ln in agent.out if "ALARM END" in ln]
    assert len(end) == 1 and _alarm_id(end[0]) == _alarm_id(start) and "(agent stopped)" in end[0]
    assert not any("overrun" in ln for ln in agent.err), [ln for ln in agent.err if "overrun" in ln]
    assert sub.wait_for(lambda: sub.on("status") and sub.on("status")[-1] == b"offline", 10)
    alarms = [json.loads(p) for p in sub.on("/alarm")]
    assert alarms[-1]["event"] == "end" and alarms[-1]["reason"] == "agent stopped"
    states = [json.loads(p) for p in sub.on("/state")]
    assert states[-1]["state"] == "normal" and states[-1]["reason"] == "agent stopped"
    assert not (state / "alarms" / "fan01.json").exists()
    sub.close()


def test_one_agent_per_state_dir_and_the_lock_goes_with_its_holder(tmp_path):
    first = StateLock.acquire(tmp_path)
    with pytest.raises(StateDirInUse, match=rf"in use by another edge-agent \(pid {os.getpid()}\)"):
        StateLock.acquire(tmp_path)  # a second open file description conflicts, even in one process
    first.release()
    again = StateLock.acquire(tmp_path)
    assert again.held and (tmp_path / "edge-agent.lock").read_text() == f"{os.getpid()}\n"
    again.release()
    assert (tmp_path / "edge-agent.lock").read_text() == ""


def test_a_lock_whose_pid_cannot_be_written_still_holds(tmp_path):
    """On a full disk the pid (only for the refusal's message) cannot be written; the agent must
    start anyway, and still be the only one. The kernel's file-size limit gives the real EFBIG."""
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from edge_agent.state.lock import StateDirInUse, StateLock\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "lock = StateLock.acquire(Path(sys.argv[1]))\n"
        "try:\n"
        "    StateLock.acquire(Path(sys.argv[1]))\n"
        "except StateDirInUse as e:\n"
        "    print('refused:', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "refused: state_dir" in r.stdout and "in use by another edge-agent:" in r.stdout, r.stdout
    assert (tmp_path / "edge-agent.lock").read_text() == ""


def test_an_alarm_left_open_by_a_killed_agent_is_closed_at_the_next_start(calibrated, tmp_path):
    state = _linked_state(calibrated, tmp_path / "st")
    cfg = _config(tmp_path / "c.yaml", state, _anomalous_only(tmp_path / "anom"))
    agent = AgentProcess("run", "--config", cfg)
    try:
        assert agent.wait_for("ALARM START"), agent.err[-20:]
        # a second agent on the same state_dir (a test run beside the service) is refused, and the
        # first one goes on
        second = cli("run", "--config", cfg)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
        assert f"state_dir {state} is in use by another edge-agent (pid {agent.p.pid})" in second.stderr
        assert agent.p.poll() is None
        agent.p.send_signal(signal.SIGKILL)  # the kernel drops its lock: the next start is not refused
        agent.finish()
    finally:
        agent.kill()
    old = _alarm_id(next(ln for ln in agent.out if "ALARM START" in ln))
    assert (state / "alarms" / "fan01.json").exists()
    cfg2 = _config(tmp_path / "c2.yaml", state, DEMO / "replay" / "01_normal_id_00_00000018.wav", loop=False)
    r = cli("run", "--config", cfg2)
    assert r.returncode == 0, r.stderr
    alarm_lines = [ln for ln in r.stdout.splitlines() if "ALARM" in ln]
    assert alarm_lines and "ALARM END" in alarm_lines[0] and _alarm_id(alarm_lines[0]) == old, r.stdout
    assert "agent restarted" in alarm_lines[0] and "closing alarm" in r.stderr
    assert not (state / "alarms" / "fan01.json").exists()
    pending = [row.data for row in Outbox(state / "outbox.sqlite").pending(limit=1000) if row.kind == "alarm"]
    assert [p["event"] for p in pending if p["alarm_id"].startswith(old)] == ["start", "end"]  # kept for a broker


# -- 4. reconnect: backlog first, within seconds -------------------------------------------------
def test_after_an_outage_the_backlog_goes_before_the_state_and_within_seconds(broker, tmp_path):  # noqa: F811
    calls = []

    def states():
        calls.append(1)
        return [("m1", {"state": "normal", "connect": len(calls)})]

    sub = Subscriber(broker.port, "edge-agent/n1/m1/#", client_id="order-sub", persistent=True)
    pub = _publisher(broker.port, tmp_path / "st", states=states)
    pub.start()
    try:
        assert pub.connected.wait(10) and _wait(lambda: len(calls) == 1, 10)
        broker.stop()
        assert _wait(lambda: not pub.connected.is_set(), 10)
        sent = []
        for i in range(30):  # alarms raised during an outage long enough for the back-off to reach its cap
            sent.append(_alarm("m1", i))  # (1 + 2 + 4 s, then mqtt.reconnect_max_seconds: 5 s)
            pub.handle("alarm", "m1", sent[-1])
        time.sleep(9.0)
        broker.start()
        back = time.monotonic()
        assert _wait(lambda: pub.outbox.depth() == 0, 30)
        took = time.monotonic() - back
        assert took < 8.0, f"the backlog reached the broker {took:.1f} s after it was back"
        ids = {p["event_id"] for p in sent}
        assert sub.wait_for(lambda: any(json.loads(m).get("connect") == 2 for m in sub.on("/state")), 10)
        order = [json.loads(m) for t, m, retained in sub.messages if not retained]
        last_alarm = max(i for i, m in enumerate(order) if m.get("event_id") in ids)
        state_after = next(i for i, m in enumerate(order) if m.get("connect") == 2)
        assert last_alarm < state_after, "the current state arrived before the backlog"
    finally:
        pub.close()
        sub.close()


# -- 6-9, 11, 13: bad input and words ------------------------------------------------------------
def _main(argv, capsys):
    from edge_agent.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("text", ["", "node_id: n1\n", "machines: {}\n"])
def test_a_config_without_machines_exits_2_with_a_message(tmp_path, capsys, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    rc, _, err = _main(["run", "--config", cfg], capsys)
    assert rc == 2 and "has no machines: add one under 'machines:'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "key,value",
    [
        ("node_id", "line/3"),
        ("node_id", "plant#"),
        ("node_id", "+"),
        ("mqtt", {"topic_prefix": "edge/#"}),
        ("mqtt", {"topic_prefix": "a/+/b"}),
        ("mqtt", {"topic_prefix": "edge/"}),
    ],
)
def test_topic_wildcards_and_separators_are_refused(key, value):
    from edge_agent.config import ConfigError

    with pytest.raises(ConfigError, match="node id|topic prefix"):
        parse_config({key: value})
    assert (
        parse_config({"node_id": "line3-jetson", "mqtt": {"topic_prefix": "plant1/edge-agent"}}).mqtt.topic_prefix
        == "plant1/edge-agent"
    )


def _corrupt_chunk(src: Path, dst: Path) -> Path:
    """A valid RIFF/WAVE header followed by a chunk whose id and size are garbage."""
    b = src.read_bytes()
    dst.write_bytes(b[:12] + b"XXXX" + (0xFFFFFFF0).to_bytes(4, "little") + b[20:])
    return dst


def test_corrupt_truncated_short_and_empty_wavs_in_run(calibrated, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    good = DEMO / "replay" / "01_normal_id_00_00000018.wav"
    (clips / "a_good.wav").write_bytes(good.read_bytes())
    _corrupt_chunk(good, clips / "b_corrupt.wav")
    b = good.read_bytes()
    (clips / "c_truncated.wav").write_bytes(b[: len(b) // 2])
    cfg = _config(tmp_path / "c.yaml", calibrated, clips, loop=False)
    r = cli("run", "--config", cfg)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "skipping " + str(clips / "b_corrupt.wav") + ": not a readable WAV file" in r.stderr
    assert "c_truncated.wav: truncated" in r.stderr and "WavFileWarning" not in r.stderr
    # what the recording held and raised, once it has been played
    summary = [line for line in r.stderr.splitlines() if f"fan01: end of {clips}:" in line]
    assert len(summary) == 1 and "1 unreadable or empty file(s) skipped" in summary[0], r.stderr
    assert re.search(r"s of audio, .*, \d+ windows, \d+ alarm\(s\), highest score \d\.\d{4} against", summary[0])
    # only a corrupt file: nothing to replay at all
    r = cli("run", "--config", _config(tmp_path / "c2.yaml", calibrated, clips / "b_corrupt.wav", loop=False))
    assert r.returncode == 2 and "no readable WAV files" in r.stderr and "Traceback" not in r.stderr
    # shorter than one window, and no frames at all
    x, sr = read_wav(good)
    write_wav(tmp_path / "short.wav", x[: sr // 2, 0], sr)
    write_wav(tmp_path / "empty.wav", np.zeros(0), sr)
    for f, held in (
        ("short.wav", "held 0.50 s of audio"),
        ("empty.wav", "held 0.00 s of audio, 1 unreadable or empty file"),
    ):
        r = cli("run", "--config", _config(tmp_path / f"c-{f}.yaml", calibrated, tmp_path / f, loop=False))
        assert r.returncode == 2 and "nothing was scored for machine fan01" in r.stderr and held in r.stderr, r.stderr
        assert "less than one window of 2 s" in r.stderr and "Traceback" not in r.stderr


def test_a_looping_replay_with_nothing_to_play_backs_off_and_says_it_once(calibrated, tmp_path):
    write_wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    cfg = _config(tmp_path / "c.yaml", calibrated, tmp_path / "empty.wav", extra_input=", silence_seconds: 1")
    agent = AgentProcess("run", "--config", cfg)
    try:
        assert agent.wait_for("state no_audio", 60), agent.err[-20:]
        time.sleep(3.0)
        agent.p.send_signal(signal.SIGTERM)
        assert agent.finish() == 0
    finally:
        agent.kill()
    errors = [ln for ln in agent.err if " ERROR " in ln]
    assert len(errors) == 2, errors  # the file once, and "nothing to replay" once (a spinning loop wrote 160k lines)
    assert any("holds no audio frames" in ln for ln in errors) and any("nothing to replay" in ln for ln in errors)


def test_signal_handlers_take_no_lock_the_interrupted_loop_may_hold(calibrated, tmp_path):
    """A handler runs in the main thread, maybe while it holds the lock inside the loop's idle wait;
    a handler that sets that Event never returns (CI hung on SIGTERM this way). Here a thread holds
    the Event's lock and runs the installed handlers as the interrupted main thread would."""
    import threading

    from edge_agent.cli.run import install_signals as _install_signals
    from edge_agent.config import load_config
    from edge_agent.runtime.daemon import agent_from_config

    agent = agent_from_config(load_config(_config(tmp_path / "c.yaml", calibrated, DEMO / "replay")), [])
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        _install_signals(agent)
        handlers = [signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)]
    finally:
        for s, h in saved.items():
            signal.signal(s, h)

    def interrupted_wait():
        # what wait()/clear() hold
        with agent.stop_event._cond, agent.reload_requested._cond, agent.commands._wakeup._cond:
            for h, signum in zip(handlers, (signal.SIGHUP, signal.SIGTERM)):
                h(signum, None)

    t = threading.Thread(target=interrupted_wait, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a signal handler blocked on a lock the interrupted thread holds"
    assert agent.signalled == "SIGTERM" and agent.reload_signalled


def test_a_replayed_file_deleted_while_running_turns_the_machine_no_audio(calibrated, tmp_path):
    f = tmp_path / "clip.wav"
    f.write_bytes((DEMO / "replay" / "01_normal_id_00_00000018.wav").read_bytes())
    cfg = _config(tmp_path / "c.yaml", calibrated, f, extra_input=", silence_seconds: 1, realtime: true")
    cfg.write_text(cfg.read_text().replace("realtime: false, ", ""))
    agent = AgentProcess("run", "--config", cfg)
    try:
        assert agent.wait_for("state normal", 60), agent.err[-20:]
        f.unlink()
        assert agent.wait_for("nothing to replay", 60, stderr=True), agent.err[-20:]  # once the clip in hand is played
        assert agent.wait_for("state no_audio", 30), agent.err[-20:]
        agent.p.send_signal(signal.SIGTERM)
        assert agent.finish() == 0
    finally:
        agent.kill()
    assert sum("nothing to replay" in ln for ln in agent.err) == 1


def test_devices_without_portaudio_names_the_library(monkeypatch, capsys):
    import ctypes.util

    for mod in ("sounddevice", "_sounddevice"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)  # as on a machine without libportaudio2
    rc, _, err = _main(["devices"], capsys)
    assert (
        rc == 2
        and "needs the PortAudio library" in err
        and "apt-get install libportaudio2" in err
        and "Traceback" not in err
    )


def test_console_words_scores_and_verbose_after_the_command(calibrated, tmp_path):
    cfg = _config(tmp_path / "c.yaml", calibrated, DEMO / "replay", loop=False)
    r = cli("run", "--config", cfg, "--scores", "-v")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    scores = [ln for ln in lines if ": score " in ln and "ALARM" not in ln]
    assert len(scores) >= 35  # one per window (40 s of audio, 2 s windows, hop 1 s), not one per 10 s
    assert all((" > threshold " in ln) != (" <= threshold " in ln) for ln in scores)
    for ln in (ln for ln in lines if "ALARM START" in ln or "ALARM UPDATE" in ln):
        score, thr = float(ln.split("score ")[1].split()[0]), float(ln.split("threshold ")[1].split(",")[0])
        assert (" > threshold" in ln) == (score > thr)
    assert " INFO " in r.stderr  # -v after the command name counts


def test_every_option_has_help_and_bank_alone_shows_its_own_help(capsys):
    from edge_agent.cli import build_parser

    def walk(p, path):
        for act in p._actions:
            if act.option_strings and act.help is None:
                yield f"{path} {act.option_strings[0]}"
            for name, sp in getattr(act, "choices", None).items() if isinstance(act.choices, dict) else ():
                yield from walk(sp, f"{path} {name}")

    assert list(walk(build_parser(), "edge-agent")) == []
    rc, out, _ = _main(["bank"], capsys)
    assert rc == 2 and "usage: edge-agent bank" in out and "show" in out


def test_a_noise_clip_among_enrolment_clips_is_named_and_left_out(tmp_path):
    rng = np.random.default_rng(0)
    write_wav(tmp_path / "white-noise.wav", 0.1 * rng.standard_normal(16000 * 10), 16000)
    clean = cli("calibrate", "--machine", "f", "--from", DEMO / "enrol", "--state-dir", tmp_path / "a", "--no-plot")
    noisy = cli(
        "calibrate",
        "--machine",
        "f",
        "--from",
        DEMO / "enrol",
        tmp_path / "white-noise.wav",
        "--state-dir",
        tmp_path / "b",
        "--no-plot",
    )
    kept = cli(
        "calibrate",
        "--machine",
        "f",
        "--from",
        DEMO / "enrol",
        tmp_path / "white-noise.wav",
        "--state-dir",
        tmp_path / "c",
        "--no-plot",
        "--keep-outliers",
    )
    assert clean.returncode == noisy.returncode == kept.returncode == 0, noisy.stderr
    assert "excluded " + str(tmp_path / "white-noise.wav") + ": it sounds unlike the other source clips" in noisy.stderr
    assert "excluded" not in clean.stderr and "kept (--keep-outliers)" in kept.stderr

    def threshold(out):
        return float(next(ln for ln in out.splitlines() if ln.startswith("threshold")).split()[1])

    assert threshold(noisy.stdout) == pytest.approx(threshold(clean.stdout))
    assert threshold(kept.stdout) > 2 * threshold(clean.stdout)  # what one noise clip does when kept


def test_a_state_dir_that_cannot_be_used_is_a_config_error(tmp_path):
    """Banks, the outbox and evidence live in state_dir: one that cannot be created (a path under a
    file, a missing mount) stops run, calibrate and a learning request with exit 2 and a message."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    state = blocker / "state"
    clip = DEMO / "replay" / "01_normal_id_00_00000018.wav"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"node_id: t\nstate_dir: {state}\nmachines:\n  fan01:\n    input: {{file: {clip}}}\n")
    runs = [
        (("run", "--config", cfg), "set state_dir in the config"),
        (("calibrate", "--machine", "fan01", "--config", cfg, "--from", clip.parent), "set --state-dir or state_dir"),
        (("calibrate", "--machine", "fan01", "--state-dir", state, "--learn", "1h"), "set --state-dir or state_dir"),
    ]
    for args, hint in runs:
        r = cli(*map(str, args))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"state_dir {state}: cannot use it (Not a directory)" in r.stderr and hint in r.stderr, r.stderr
    assert blocker.read_text() == ""
