"""DCASE metrics against hand-computed cases, the submission CSVs, and an end-to-end evaluate run."""

import csv
import json

import numpy as np
import pytest

from calibration.metrics import (
    auc,
    auc_by_attribute,
    bootstrap_auc,
    bootstrap_hmean,
    harmonic_mean,
    pauc,
    section_scores,
)
from tests.conftest import DATA, shared
from tests.test_run_replay import cli


def test_auc_by_hand():
    # 2 normals (0.1, 0.4), 2 anomalies (0.35, 0.8): pairs won 3 of 4
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75


def test_pauc_by_hand():
    # 10 normals, 2 anomalies. Scores put one anomaly above every normal and one below all of them.
    y = np.array([0] * 10 + [1, 1])
    s = np.array([0.1 * i for i in range(10)] + [5.0, -1.0])
    # ROC: TPR jumps to 0.5 at FPR 0, stays there until FPR 1. Raw partial area up to FPR 0.1 = 0.05.
    # McClish standardisation: min area (diagonal) 0.005, max 0.1 -> (1 + (0.05 - 0.005) / (0.1 - 0.005)) / 2
    expected = 0.5 * (1 + (0.05 - 0.005) / (0.1 - 0.005))
    assert pauc(y, s) == pytest.approx(expected)
    assert pauc(y, np.r_[np.arange(10), 20, 30]) == pytest.approx(1.0)


def test_section_scores_with_domains_and_decisions():
    y = np.array([0, 0, 0, 0, 1, 1])
    dom = np.array(["source", "source", "target", "target", "source", "target"])
    s = np.array([0.1, 0.2, 0.5, 0.6, 0.55, 0.9])
    r = section_scores(y, s, dom, s > 0.52)
    assert r["auc_source"] == 1.0  # anomalies 0.55, 0.9 above source normals 0.1, 0.2
    assert r["auc_target"] == 0.75  # 0.55 loses to 0.6
    assert r["hmean"] == pytest.approx(harmonic_mean([r["auc_source"], r["auc_target"], r["pauc"]]))
    assert (r["precision"], r["recall"]) == (2 / 3, 1.0)
    r2 = section_scores(y, s, np.array(["source"] * 6))
    assert set(r2) >= {"auc", "pauc", "hmean"} and "auc_source" not in r2


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_clips():
    rng = np.random.default_rng(3)

    def draw(n):
        y = np.r_[np.zeros(n), np.ones(n)]
        return y, rng.normal(size=2 * n) + 1.0 * y

    y, s = draw(10)
    lo, hi = bootstrap_auc(y, s, n=300)  # fewer resamples than the benchmarks' 1000: the same properties
    assert lo <= auc(y, s) <= hi and hi - lo > 0.1  # ten clips a class: a wide interval
    y2, s2 = draw(400)
    lo2, hi2 = bootstrap_auc(y2, s2, n=300)
    assert lo2 <= auc(y2, s2) <= hi2 and hi2 - lo2 < 0.5 * (hi - lo)
    assert bootstrap_auc(y, s, n=300) == (lo, hi)  # seeded: the same interval every run
    domains = np.array(["source", "target"] * 10)
    lo, hi = bootstrap_hmean(y, s, domains, n=300)
    assert lo <= section_scores(y, s, domains)["hmean"] <= hi


def test_auc_by_attribute_tells_conditions_apart_that_the_pooled_auc_mixes():
    """Two operating patterns with different score levels: each separates its own anomalies
    perfectly, while the pooled AUC does not (the offset between patterns mixes in)."""
    y = np.array([0, 0, 0, 1, 1, 1] * 2)
    s = np.r_[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]]
    pat = np.array(["pat=00"] * 6 + ["pat=02"] * 6)
    by = auc_by_attribute(y, s, pat)
    assert set(by) == {"pat=00", "pat=02"} and all(v[0] == 1.0 for v in by.values())
    assert auc(y, s) < 0.8
    assert auc_by_attribute(y[:3], s[:3], pat[:3]) == {}  # normals only: no AUC to give


def test_evaluate_end_to_end_on_real_clips(tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "valve").symlink_to(DATA / "valve")
    out = tmp_path / "out"
    r = cli("evaluate", ds, "--out", out, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    sec = res["machines"]["valve"]["sections"]["00"]
    assert {"auc_source", "auc_target", "pauc", "hmean", "precision", "recall", "f1"} <= set(sec)
    rows = list(csv.reader(open(out / "anomaly_score_valve_section_00_test.csv")))
    assert len(rows) == 4 and all(r[0].endswith(".wav") and float(r[1]) >= 0 for r in rows)
    dec = list(csv.reader(open(out / "decision_result_valve_section_00_test.csv")))
    assert [r[0] for r in dec] == [r[0] for r in rows] and {r[1] for r in dec} <= {"0", "1"}
    assert (out / "roc_valve.png").stat().st_size > 5000
    assert "| valve | 00 |" in (out / "results.md").read_text()
    assert "evaluating" in r.stderr  # the progress bar


def test_evaluate_mimii_without_domains(tmp_path):
    fan = shared("mimii", "fan")
    r = cli("evaluate", fan, "--out", tmp_path / "o", timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    sec = res["machines"]["fan"]["sections"]["id_00"]
    assert "auc" in sec and "auc_source" not in sec and res["hmean"] > 0.5
    assert (tmp_path / "o" / "anomaly_score_fan_section_00_test.csv").exists()


def test_evaluate_bad_dir(tmp_path):
    r = cli("evaluate", tmp_path / "none")
    assert r.returncode == 2 and "no such directory" in r.stderr
    r = cli("evaluate", tmp_path)
    assert r.returncode == 2 and "no machine folders" in r.stderr
