"""Hostile or mistyped input outside MQTT: config values, WAV files, banks and learning requests are
refused at load with a message and exit 2 (never a traceback); what a running agent meets (a
SIGHUP with a bad edit, NaN samples, a learning period that cannot make a bank, a thread that
raises) is logged, counted and leaves it monitoring."""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest

from edge_agent.audio.replay import ReplaySource
from edge_agent.audio.wavio import read_wav
from edge_agent.config import parse_config
from edge_agent.faults import Faults
from edge_agent.health.check import check
from edge_agent.health.monitor import start_metrics
from edge_agent.scoring.bank import BankError, MemoryBank, bank_path
from tests.brokers import free_port, wait_for
from tests.conftest import DEMO
from tests.test_commands import Running
from tests.test_run_replay import cli


def _config(path, state, extra_machine="", extra="", replay=DEMO / "replay", loop=False, inp=""):
    evidence = "" if "evidence:" in extra else "evidence: {enabled: false}\n"
    path.write_text(
        f"node_id: test-node\nstate_dir: {state}\nengine: cpu\n{evidence}{extra}"
        f"machines:\n  fan01:\n    input: {{file: {replay}, realtime: false, loop: {str(loop).lower()}{inp}}}\n"
        f"{extra_machine}"
    )
    return path


@pytest.mark.parametrize(
    "machine, extra, words",
    [
        ("    hop_seconds: .inf\n", "", "machines.fan01.hop_seconds: Input should be a finite number"),
        ("    hop_seconds: 1e-9\n", "", "hop_seconds: Input should be greater than or equal to 0.05"),
        ("    alarm: {smooth_seconds: .inf}\n", "", "alarm.smooth_seconds: Input should be a finite number"),
        ("    alarm: {update_seconds: .nan}\n", "", "alarm.update_seconds: Input should be a finite number"),
        ("    learn: 3s\n", "", "learn: Value error, '3s': a learning period lasts 60 s"),
        ("", "metrics: {listen: nonsense}\n", "metrics.listen: Value error, 'nonsense' is not host:port"),
        ("", "metrics: {listen: '127.0.0.1:99999'}\n", "metrics.listen: Value error"),
        ("", "evidence: {max_mb: .inf}\n", "evidence.max_mb: Input should be a finite number"),
        ("", "mqtt: {host: 'no such host..'}\n", "mqtt.host: Value error, 'no such host..' is not a host name"),
        ("", "mqtt: {homeassistant: {discovery_prefix: 'ha/#'}}\n", "discovery_prefix: Value error, 'ha/#'"),
        ("", "mqtt: {homeassistant: {discovery_prefix: '+'}}\n", "is not a valid discovery prefix"),
        ("", "mqtt: {keepalive: 1e12}\n", "mqtt.keepalive"),
    ],
)
def test_hostile_config_values_are_refused_at_load(tmp_path, machine, extra, words):
    cfg = _config(tmp_path / "c.yaml", tmp_path / "st", machine, extra)
    r = cli("run", "--config", cfg)
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_values_only_the_input_can_refuse_exit_2(tmp_path, calibrated):
    # a channel the recording does not have
    r = cli("run", "--config", _config(tmp_path / "c.yaml", calibrated, inp=", channel: 5"))
    assert r.returncode == 2 and "input.channel is 5" in r.stderr and "1 channel(s)" in r.stderr, r.stderr
    # a WAV header claiming 2,147,483,647 Hz: refused before anything is sized by it
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = bytearray((DEMO / "replay" / "01_normal_id_00_00000018.wav").read_bytes())
    raw[24:28] = (2**31 - 1).to_bytes(4, "little")
    (bad / "huge.wav").write_bytes(bytes(raw))
    r = cli("run", "--config", _config(tmp_path / "c2.yaml", calibrated, replay=bad))
    assert r.returncode == 2 and "2147483647 Hz" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # TLS files that are not PEM
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    tls = f"mqtt: {{tls: {{ca_file: {tmp_path / 'ca.pem'}}}}}\n"
    r = cli("run", "--config", _config(tmp_path / "c3.yaml", calibrated, extra=tls))
    assert r.returncode == 2 and "mqtt.tls" in r.stderr and "PEM" in r.stderr, r.stderr


def test_a_config_file_that_is_not_text_or_too_deep_is_exit_2(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    r = cli("run", "--config", tmp_path / "bin.yaml")
    assert r.returncode == 2 and "not UTF-8 text" in r.stderr
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    r = cli("run", "--config", tmp_path / "deep.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_a_bank_of_nans_is_refused_with_what_to_do(tmp_path, calibrated):
    bank = MemoryBank.load(bank_path(calibrated, "fan01"))
    bank.embeddings[3, 5] = np.nan
    st = tmp_path / "st"
    bank.save(bank_path(st, "fan01"))
    with pytest.raises(BankError, match="NaN/Inf"):
        MemoryBank.load(bank_path(st, "fan01"))
    r = cli("run", "--config", _config(tmp_path / "c.yaml", st))
    assert r.returncode == 2 and "recalibrate the machine" in r.stderr


def _float_wav(path, x: np.ndarray, sr: int) -> None:
    from scipy.io import wavfile

    wavfile.write(path, sr, x.astype(np.float32))


def test_nan_and_inf_samples_never_become_nan_scores(tmp_path, calibrated, caplog):
    """A float WAV with 1 % NaN/Inf samples: repaired on reading (said once), every window scored
    with a finite number, the anomaly still found, and every payload strict JSON."""
    d = tmp_path / "nan"
    d.mkdir()
    rng = np.random.default_rng(7)
    for f in sorted((DEMO / "replay").glob("*.wav")):
        x, sr = read_wav(f)
        idx = rng.choice(x.size, x.size // 100, replace=False)
        x.reshape(-1)[idx] = rng.choice([np.nan, np.inf, -np.inf], idx.size)
        _float_wav(d / f.name, x, sr)
    caplog.set_level(logging.WARNING)
    assert np.isfinite(read_wav(d / "01_normal_id_00_00000018.wav")[0]).all()
    assert "NaN/Inf sample(s) replaced by silence" in caplog.text
    r = cli("run", "--config", _config(tmp_path / "c.yaml", calibrated, replay=d), "--scores")
    assert r.returncode == 0, r.stderr
    scores = [ln for ln in r.stdout.splitlines() if ": score " in ln]
    assert len(scores) >= 30 and not [ln for ln in scores if "nan" in ln.lower()]
    assert "ALARM START" in r.stdout


def test_a_stream_repairs_non_finite_samples_from_any_source(tmp_path):
    """Live sources (a driver) bypass the WAV reader: the stream repairs what reaches its ring."""
    from edge_agent.model.bundle import Bundle
    from edge_agent.runtime.stream import MachineStream

    bundle = Bundle.load("default")
    src = ReplaySource("m", DEMO / "replay" / "01_normal_id_00_00000018.wav", realtime=False)
    cfg = parse_config({"machines": {"m": {}}}).machines["m"]
    s = MachineStream("m", cfg, src, bundle.frontend, None)
    x = np.full((bundle.frontend.sample_rate * 3, 1), 0.1, np.float32)
    x[::50] = np.nan
    x[1::50] = np.inf
    src.ring.write(x)
    windows = s.pump()
    assert windows and all(np.isfinite(w.samples).all() and np.isfinite(w.level_dbfs) for w in windows)
    assert s.nonfinite_samples == 2 * len(x[::50])
    assert s.finite_score(0.3) and not s.finite_score(float("nan")) and s.nonfinite_scores == 1


def test_sighup_with_a_bad_edit_keeps_the_running_config(tmp_path, calibrated, caplog):
    cfg = _config(tmp_path / "c.yaml", calibrated, loop=True)
    run = Running(cfg, learning=False)
    agent = run.agent
    try:
        assert wait_for(lambda: agent.stats.windows > 5, 60)
        cfg.write_text(cfg.read_text() + "    hop_seconds: .inf\n")
        agent.reload_requested.set()
        assert wait_for(lambda: "reload: keeping the running config" in caplog.text, 20)
        n = agent.stats.windows
        assert wait_for(lambda: agent.stats.windows > n + 5, 60) and run.thread.is_alive()
        assert agent.streams["fan01"].cfg.hop_seconds == 1.0
    finally:
        run.stop()


def test_a_bad_learning_request_is_set_aside_and_the_bank_stays(tmp_path, calibrated):
    st = tmp_path / "st"
    (st / "machines" / "fan01").mkdir(parents=True)
    bank = bank_path(st, "fan01")
    bank.write_bytes(bank_path(calibrated, "fan01").read_bytes())
    req = bank.parent / "learning.json"
    req.write_text(json.dumps({"seconds": 1e-300, "done": 0}))
    r = cli("run", "--config", _config(tmp_path / "c.yaml", st))
    assert r.returncode == 0, r.stderr
    assert "cannot use this learning request" in r.stderr and "seconds: Input should be greater" in r.stderr
    assert not req.exists() and (bank.parent / "learning.json.invalid").is_file()
    assert bank.read_bytes() == bank_path(calibrated, "fan01").read_bytes()
    assert "ALARM START" in r.stdout  # monitored with its bank


def test_a_learning_period_that_cannot_make_a_bank_leaves_the_old_one(tmp_path, calibrated, monkeypatch):
    import calibration.enrol
    from calibration.embed import CalibrationError
    from edge_agent.runtime.learn_request import request_learning

    def refuse(*a, **kw):
        raise CalibrationError("injected: the enrolment failed")

    monkeypatch.setattr(calibration.enrol, "enrol", refuse)
    st = tmp_path / "st"
    bank = bank_path(st, "fan01")
    bank.parent.mkdir(parents=True)
    bank.write_bytes(bank_path(calibrated, "fan01").read_bytes())
    request_learning(st, "fan01", 60.0)
    run = Running(_config(tmp_path / "c.yaml", st, loop=True))
    s = run.agent.streams["fan01"]
    try:
        assert wait_for(lambda: s.learner is None and s.windows_processed > 60, 120)
        assert run.agent.faults.counts == {"fan01: learning": 1}
        n = s.windows_processed
        assert wait_for(lambda: s.windows_processed > n + 5 and s.state in ("normal", "anomaly"), 60)
    finally:
        run.stop()
    assert bank.read_bytes() == bank_path(calibrated, "fan01").read_bytes()
    assert (bank.parent / "learning.json.failed").is_file() and not (bank.parent / "learning.json").exists()


def test_an_audio_thread_that_raises_is_counted_and_restarted(tmp_path, calibrated, monkeypatch):
    real = ReplaySource._run
    calls = []

    def once(self):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        return real(self)

    monkeypatch.setattr(ReplaySource, "_run", once)
    monkeypatch.setattr("edge_agent.faults.BACKOFF", (0.2, 1.0))
    run = Running(_config(tmp_path / "c.yaml", calibrated, loop=True), learning=False)
    try:
        assert wait_for(lambda: run.agent.stats.windows > 5, 60)
        assert run.agent.faults.counts == {"audio input fan01": 1} and not run.agent.faults.dead
    finally:
        run.stop()


def test_a_dead_thread_fails_the_watchdog_metrics_and_healthcheck(tmp_path, calibrated):
    from edge_agent.health.monitor import Health

    run = Running(_config(tmp_path / "c.yaml", calibrated, loop=True), learning=False)
    port = free_port()
    server = start_metrics(run.agent.streams, run.agent.faults, f"127.0.0.1:{port}")
    try:
        assert wait_for(lambda: run.agent.stats.windows > 2, 60)
        assert check(f"http://127.0.0.1:{port}/metrics")[0]
        run.agent.faults.mark_dead("paho-mqtt-client-x", "RuntimeError: boom")
        ok, msg = check(f"http://127.0.0.1:{port}/metrics")
        assert not ok and "thread(s) ended by an exception: paho-mqtt-client-x" in msg
        assert "thread paho-mqtt-client-x died" in Health(run.agent.streams, run.agent.faults).progress()
    finally:
        server.shutdown()
        run.stop()


def test_faults_guard_and_supervise(monkeypatch):
    monkeypatch.setattr("edge_agent.faults.BACKOFF", (0.05, 0.1))
    f = Faults()
    assert f.guard("cb", fallback="x")(lambda: 1 / 0)() == "x" and f.counts == {"cb": 1}
    stop, runs = threading.Event(), []

    def body():
        runs.append(1)
        if len(runs) < 3:
            raise ValueError("again")

    t = threading.Thread(target=f.supervise("body", body, stop), name="sup")
    t.start()
    t.join(5)
    assert len(runs) == 3 and f.counts["body"] == 2 and not f.dead
    stop.set()
    t = threading.Thread(target=f.supervise("body", lambda: 1 / 0, stop), name="dead-one")
    t.start()
    t.join(5)
    assert "dead-one" in f.dead and "dead-one" in f.problem()


def test_a_command_that_fails_inside_the_agent_is_answered_and_counted(tmp_path, calibrated, monkeypatch):
    import edge_agent.runtime.commands

    def broken(*a):
        raise RuntimeError("injected into a command")

    run = Running(_config(tmp_path / "c.yaml", calibrated, loop=True), learning=False)
    try:
        assert wait_for(lambda: run.agent.stats.windows > 2, 60)
        monkeypatch.setattr(edge_agent.runtime.commands, "_apply", broken)
        r = run.agent.commands.call("fan01", '{"command": "unshelve", "id": "x"}', "test")
        assert r["ok"] is False and "failed inside the agent (RuntimeError)" in r["error"] and r["id"] == "x"
        assert run.agent.faults.counts == {"command from test": 1}
        n = run.agent.stats.windows
        assert wait_for(lambda: run.agent.stats.windows > n + 5, 60) and run.thread.is_alive()
    finally:
        run.stop()


def test_the_evidence_writer_restarts_after_an_exception(tmp_path, calibrated, monkeypatch):
    import edge_agent.alarms.evidence

    calls = []

    def trim_once():
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("injected into the evidence writer")

    monkeypatch.setattr(edge_agent.alarms.evidence, "trim", trim_once)
    monkeypatch.setattr("edge_agent.faults.BACKOFF", (0.2, 1.0))
    extra = "evidence: {pre_seconds: 2, post_seconds: 2}\n"
    run = Running(_config(tmp_path / "c.yaml", calibrated, extra=extra, loop=True), learning=False)
    try:
        assert wait_for(lambda: run.agent.evidence.written >= 2, 120)
        assert run.agent.faults.counts == {"evidence writer": 1}
    finally:
        run.stop()
