"""Score heads (edge_agent.scoring): pure functions over model outputs."""

import numpy as np
import pytest

from edge_agent.bank import MemoryBank
from edge_agent.scoring import (
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
