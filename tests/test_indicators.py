"""The model-free ``indicators`` score head (level, crest factor, kurtosis): the pure math on signals
whose indicators are known, and calibrate + run with it on real clips."""

import numpy as np
import pytest

from edge_agent.audio.wavio import read_wav, write_wav
from edge_agent.model import indicators
from edge_agent.model.indicators import FLOORS, held_out_scores, indicator_spec, window_indicators
from edge_agent.scoring.bank import MemoryBank, bank_path
from edge_agent.scoring.heads import score_windows
from tests.conftest import DEMO
from tests.test_run_replay import cli, write_config

SR = 16000


def test_indicators_of_signals_whose_values_are_known():
    t = np.arange(2 * SR) / SR
    sine = 0.5 * np.sin(2 * np.pi * 440 * t)
    noise = np.random.default_rng(0).normal(0, 0.1, 2 * SR)
    clicks = np.zeros(2 * SR)
    clicks[:: SR // 4] = 0.9
    level, crest, kurt = window_indicators(np.stack([sine, noise, clicks])).T
    assert level[0] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert crest[0] == pytest.approx(20 * np.log10(np.sqrt(2)), abs=0.01)  # 3 dB: a sine's peak over RMS
    assert kurt[0] == pytest.approx(np.log(1.5), abs=0.01)
    assert level[1] == pytest.approx(-20, abs=0.1) and kurt[1] == pytest.approx(np.log(3), abs=0.05)
    assert crest[2] > 20 and kurt[2] > np.log(1000)  # sparse clicks: impulsive
    assert np.isfinite(window_indicators(np.zeros((1, SR)))).all()  # digital silence is no crash


def test_the_head_scores_distance_to_the_nearest_enrolled_window_in_either_direction():
    rng = np.random.default_rng(1)
    clips = [rng.normal(0, 0.1 * (1 + 0.02 * i), (5, SR)) for i in range(4)]
    rows = np.concatenate([window_indicators(c) for c in clips])
    spec = indicator_spec(rows)
    assert np.allclose(spec["spread"], np.maximum(rows.std(axis=0), FLOORS), atol=1e-3)
    same = score_windows(spec, {"indicators": rows}, None)
    assert same.max() < 0.05  # an enrolled window is on the reference (to the storage grid)
    louder, quieter = (window_indicators(c[:2] * g) for c, g in ((clips[0], 2.0), (clips[0], 0.5)))
    s_loud = score_windows(spec, {"indicators": louder}, None)
    s_quiet = score_windows(spec, {"indicators": quieter}, None)
    assert (s_loud > 4).all() and (s_quiet > 4).all()  # 6 dB against a 1 dB floor, both ways
    # held out: each clip against the others only, so a clip unlike the rest stands out
    odd = rng.normal(0, 0.3, (5, SR))
    rows2 = np.concatenate([rows, window_indicators(odd)])
    groups = np.repeat(np.arange(5), 5)
    held = held_out_scores(indicator_spec(rows2), rows2, groups)
    assert held[:20].max() < 1.0 and held[20:].min() > 2.0
    with pytest.raises(ValueError, match="at least 2"):
        indicator_spec(rows[:1])


def test_a_bank_parses_the_heads_stored_reference_once_not_at_every_window(monkeypatch):
    """The reference is kept in the bank's JSON metadata as lists; parsing them cost more than
    scoring a window, so a bank makes its head once, and again only when its spec is replaced."""
    import edge_agent.scoring.heads.indicators as head_module

    rows = window_indicators(np.random.default_rng(2).normal(0, 0.1, (40, SR // 4)))
    spec = indicator_spec(rows)
    bank = MemoryBank(np.eye(2, dtype=np.float32), np.array(["source"] * 2), np.array(["centre"] * 2), "x")
    bank.meta["score"] = spec
    parsed = []
    monkeypatch.setattr(head_module, "reference", lambda s: parsed.append(1) or indicators.reference(s))
    first = [bank.anomaly_scores({"indicators": rows[i : i + 1]})[0] for i in range(5)]
    assert len(parsed) == 1  # five windows, one parse
    assert np.allclose(first, score_windows(spec, {"indicators": rows[:5]}, None))  # the same scores
    parsed.clear()
    bank.meta["score"] = dict(spec)  # a new head (recalibrated, reloaded): made for itself
    bank.anomaly_scores({"indicators": rows[:1]})
    bank.anomaly_scores({"indicators": rows[:1]})
    assert len(parsed) == 1


def test_calibrate_and_run_with_the_indicators_head_on_real_clips(tmp_path):
    """Enrolled on the demo's normal fan clips, the head alarms on the same fan made 10 dB louder, not
    on an unseen normal clip; the runtime scores it without torch, from any model bundle."""
    st = tmp_path / "state"
    r = cli(
        "calibrate",
        "--machine",
        "fan01",
        "--from",
        DEMO / "enrol",
        "--state-dir",
        st,
        "--no-plot",
        "--score",
        "indicators",
    )
    assert r.returncode == 0, r.stderr
    assert "level, crest factor and kurtosis" in r.stdout
    assert "used to train the model" not in r.stderr  # no model in this score, so no such warning
    bank = MemoryBank.load(bank_path(st, "fan01"))
    assert bank.meta["score"]["kind"] == "indicators" and bank.threshold > 0
    assert "leave-one-clip-out" in bank.meta["alarm_rate"]["method"]
    normal = DEMO / "replay" / "04_normal_id_00_00000011.wav"
    x, sr = read_wav(normal)
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "1_normal.wav").symlink_to(normal)
    write_wav(replay / "2_louder.wav", np.clip(x * 10 ** (10 / 20), -1, 1), sr)
    cfg = tmp_path / "c.yaml"
    write_config(cfg, st, {"fan01": {"file": replay, "realtime": "false"}})
    r = cli("run", "--config", cfg, "--scores", block_torch=True)
    assert r.returncode == 0, r.stderr
    scores = [ln for ln in r.stdout.splitlines() if "fan01: score" in ln]
    assert len(scores) >= 18 and all("<= threshold" in ln for ln in scores[:9])  # the 10 s normal clip's windows
    assert all("> threshold" in ln for ln in scores[10:])  # windows wholly within the louder clip
    assert "fan01: ALARM START" in r.stdout and "ALARM" not in r.stdout.split(scores[9])[0]


def test_relearning_keeps_a_head_a_learning_period_can_make():
    from edge_agent.runtime.learn_request import learnable_score

    assert learnable_score(None) is None and learnable_score({"kind": "knn"}) == "knn"
    ens = {"kind": "ensemble", "members": [{"kind": "knn"}, {"kind": "indicators", "rows": []}]}
    assert learnable_score(ens) == "knn+indicators"
    assert learnable_score({"kind": "ensemble", "members": [{"kind": "knn"}, {"kind": "rec-kld"}]}) is None
    assert learnable_score({"kind": "classifier", "class_index": 0}) is None
