"""Score heads (edge_agent.scoring.heads): pure functions over model outputs."""

import numpy as np
import pytest

from edge_agent.scoring.bank import MemoryBank
from edge_agent.scoring.heads import (
    ScoreError,
    ensemble_spec,
    parse_score,
    score_windows,
    softmax_score,
)


def _bank(entries):
    e = np.asarray(entries, np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return MemoryBank(
        embeddings=e, domains=np.array(["source"] * len(e)), kinds=np.array(["centre"] * len(e)), model_sha256="x"
    )


def test_heads_compute_what_the_docs_say():
    out = {
        "embedding": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
        "logits": np.array([[2.0, 0.0], [0.0, 0.0]], np.float32),
        "rec_kld": np.array([0.5, 1.5], np.float32),
        "center_dist": np.array([[0.1, 0.2], [0.3, 0.4]], np.float32),
    }
    bank = _bank([[1.0, 0.0]])
    assert np.allclose(score_windows(None, out, bank), [0.0, 1.0])
    assert np.allclose(
        score_windows({"kind": "classifier", "class_index": 0}, out, bank), [1 - np.exp(2) / (np.exp(2) + 1), 0.5]
    )
    assert np.allclose(score_windows({"kind": "rec-kld"}, out, bank), [0.5, 1.5])
    assert np.allclose(
        score_windows({"kind": "rec-kld-center", "class_index": 1, "weight": 10.0}, out, bank), [2.5, 5.5]
    )
    spec = ensemble_spec([{"kind": "knn"}, {"kind": "rec-kld"}], [np.array([0.0, 0.2]), np.array([1.0, 3.0])])
    m = spec["members"]
    assert np.isclose(m[0]["mean"], 0.1) and np.isclose(m[1]["std"], 1.0)
    want = ((np.array([0.0, 1.0]) - 0.1) / m[0]["std"] + (np.array([0.5, 1.5]) - 2.0) / m[1]["std"]) / 2
    assert np.allclose(score_windows(spec, out, bank), want, atol=1e-5)


def test_missing_output_and_bad_names_are_clear():
    with pytest.raises(ScoreError, match="no 'rec_kld' output"):
        score_windows({"kind": "rec-kld"}, {"embedding": np.zeros((1, 2), np.float32)}, None)
    with pytest.raises(ScoreError, match="use one of"):
        parse_score("knn+nope")
    with pytest.raises(ScoreError, match="twice"):
        parse_score("knn+knn")
    assert parse_score(" rec-kld + rec-kld-center ") == ["rec-kld", "rec-kld-center"]


def test_softmax_score():
    assert np.allclose(softmax_score(np.zeros((1, 4), np.float32), 2), 0.75)


def test_a_new_head_is_one_module_and_a_registry_line(tmp_path, monkeypatch):
    """A head written against the protocol (here in the test, as it would be in its own module) and
    registered: calibrate fits it, the bank stores and reloads it, the agent scores with it."""
    from edge_agent.scoring import heads
    from edge_agent.scoring.bank import bank_path
    from tests.conftest import DEMO
    from tests.test_run_replay import cli, write_config

    class Loudness(heads.Head):
        """Level of the window against the enrolled windows' median level, in dB either way."""

        kind = "loudness"
        outputs = ("indicators",)
        model_free = True
        summary = "level against the enrolled median"

        def score(self, outputs, bank=None):
            return np.abs(outputs["indicators"][:, 0] - self.spec["median_db"]).astype(np.float32)

        def fit(self, enrolment):
            spec = {"kind": self.kind, "median_db": float(np.median(enrolment.outputs["indicators"][:, 0]))}
            return spec, Loudness(spec).score(enrolment.outputs)

    monkeypatch.setitem(heads.REGISTRY, "loudness", Loudness)
    st = tmp_path / "st"
    r = cli("calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", st, "--score", "loudness")
    assert r.returncode == 0, r.stderr
    bank = MemoryBank.load(bank_path(st, "fan01"))
    assert bank.meta["score"]["kind"] == "loudness" and bank.scorer().describe() == "level against the enrolled median"
    cfg = tmp_path / "c.yaml"
    write_config(cfg, st, {"fan01": {"file": DEMO / "replay", "realtime": "false"}})
    r = cli("run", "--config", cfg, "--scores")
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stdout.splitlines() if ": score " in ln]) == 36
