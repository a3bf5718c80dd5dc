"""The learning period end to end: a machine without a bank learns from its own replayed sound
(state `learning`, no alarms), then monitors and alarms on a real anomalous clip, seen on a real
broker; a period interrupted by a stop resumes at the next start; `calibrate --learn` requests one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.scoring.bank import MemoryBank, bank_path
from tests.brokers import Subscriber, broker  # noqa: F401 - fixture
from tests.conftest import DEMO
from tests.test_run_replay import cli


def _stream(d: Path, normals: int, anomalous: bool) -> Path:
    d.mkdir()
    for i, f in enumerate(sorted((DEMO / "enrol").glob("*.wav"))[:normals]):
        (d / f"{i:02d}_{f.name}").symlink_to(f)
    if anomalous:
        (d / "50_anomaly.wav").symlink_to(DEMO / "replay" / "02_anomaly_id_00_00000002.wav")
        (d / "51_normal.wav").symlink_to(DEMO / "replay" / "04_normal_id_00_00000011.wav")
    return d


def _config(path: Path, state: Path, replay: Path, learn: str, port=None) -> Path:
    mqtt = f"mqtt: {{host: 127.0.0.1, port: {port}, keepalive: 5}}\n" if port else ""
    path.write_text(
        f"node_id: n1\nstate_dir: {state}\nengine: cpu\nmachines:\n  fan01:\n"
        f"    input: {{file: {replay}, realtime: false, continuous: true}}\n    learn: {learn}\n{mqtt}"
    )
    return path


def test_learning_then_monitoring_then_an_alarm_on_a_real_broker(broker, tmp_path):  # noqa: F811
    sub = Subscriber(broker.port, "edge-agent/n1/fan01/#")
    cfg = _config(tmp_path / "c.yaml", tmp_path / "st", _stream(tmp_path / "replay", 10, True), "90s", broker.port)
    r = cli("run", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "UNCALIBRATED" not in r.stderr and "learning done after 90 s" in r.stderr
    assert sub.wait_for(lambda: any(b'"event":"end"' in p.replace(b" ", b"") for p in sub.on("/alarm")), 20)
    msgs = [(t.rsplit("/", 1)[1], json.loads(p)) for t, p, _ in sub.messages if t.endswith(("/state", "/alarm"))]
    states = [m["state"] for k, m in msgs if k == "state"]
    assert states[0] == "learning" and "normal" in states and "anomaly" in states
    first_alarm = next(i for i, (k, _) in enumerate(msgs) if k == "alarm")
    done = next(i for i, (k, m) in enumerate(msgs) if k == "state" and m.get("reason", "").startswith("learning done"))
    assert done < first_alarm  # no alarm while learning
    learning = [m for k, m in msgs if k == "state" and m["state"] == "learning"]
    assert any("50 %" in m["reason"] for m in learning)  # progress on the retained state
    bank = MemoryBank.load(bank_path(tmp_path / "st", "fan01"))
    assert bank.meta["learned"]["seconds"] == pytest.approx(90) and bank.meta["levels_dbfs"]["windows"] == 90
    assert bank.info.bands is not None and len(bank.info.bands.median_db) == len(bank.info.bands.centres_hz)
    assert not (tmp_path / "st" / "machines" / "fan01" / "learning.json").exists()
    sub.close()


def test_a_learning_period_resumes_after_a_stop(tmp_path):
    st = tmp_path / "st"
    first = _config(tmp_path / "c1.yaml", st, _stream(tmp_path / "r1", 4, False), "70s")
    r = cli("run", "--config", first)  # 40 s of sound in one stream: 39 windows of 2 s at hop 1 s
    assert r.returncode == 0, r.stderr
    saved = json.loads((st / "machines" / "fan01" / "learning.json").read_text())
    assert saved["done"] == pytest.approx(39) and not bank_path(st, "fan01").exists()
    second = _config(tmp_path / "c2.yaml", st, _stream(tmp_path / "r2", 5, False), "70s")
    r = cli("run", "--config", second)
    assert r.returncode == 0, r.stderr
    assert "resuming the learning period at 56 %" in r.stderr and "learning done after 70 s" in r.stderr
    assert MemoryBank.load(bank_path(st, "fan01")).meta["learned"]["seconds"] == pytest.approx(70)


def test_calibrate_learn_requests_a_period_and_rejects_bad_durations(tmp_path):
    r = cli("calibrate", "--machine", "fan01", "--learn", "24h", "--state-dir", tmp_path / "st")
    assert r.returncode == 0 and "learning requested for fan01" in r.stdout, r.stderr
    assert json.loads((tmp_path / "st" / "machines" / "fan01" / "learning.json").read_text())["seconds"] == 86400
    r = cli("calibrate", "--machine", "fan01", "--learn", "soon", "--state-dir", tmp_path / "st")
    assert r.returncode == 2 and "is not a duration" in r.stderr and "Traceback" not in r.stderr
    r = cli("calibrate", "--machine", "fan01", "--learn", "3s", "--state-dir", tmp_path / "st")
    assert r.returncode == 2 and "--learn: 3s: a learning period lasts 60 s to 90 days" in r.stderr, r.stderr


def test_a_learning_period_with_the_indicators_head_resumes_and_then_alarms(tmp_path):
    """calibrate --learn --score knn+indicators: the reservoir keeps each window's indicators across a
    stop, and the learned bank scores with the ensemble, alarming on the demo's anomalous fan."""
    st = tmp_path / "st"
    r = cli("calibrate", "--machine", "fan01", "--learn", "70s", "--score", "knn+indicators", "--state-dir", st)
    assert r.returncode == 0 and "score with knn+indicators" in r.stdout, r.stderr
    r = cli("calibrate", "--machine", "fan01", "--learn", "70s", "--score", "classifier", "--state-dir", st)
    assert r.returncode == 2 and "a learning period scores with knn or indicators" in r.stderr
    r = cli("calibrate", "--machine", "fan01", "--learn", "70s", "--score", "knn+indicators", "--state-dir", st)
    assert r.returncode == 0, r.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"node_id: n1\nstate_dir: {st}\nengine: cpu\nmachines:\n  fan01:\n"
        f"    input: {{file: {_stream(tmp_path / 'r1', 4, False)}, realtime: false}}\n"
    )
    r = cli("run", "--config", cfg)
    assert r.returncode == 0, r.stderr
    with np.load(st / "machines" / "fan01" / "learning.npz") as z:
        assert z["ind_0"].shape[1] == 3
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "r1"), str(_stream(tmp_path / "r2", 5, True))))
    r = cli("run", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "resuming the learning period" in r.stderr and "learning done after 70 s" in r.stderr
    spec = MemoryBank.load(bank_path(st, "fan01")).meta["score"]
    assert [m["kind"] for m in spec["members"]] == ["knn", "indicators"]
    assert "fan01: ALARM START" in r.stdout
