"""The label parser on every naming scheme, and indexing that skips bad files without crashing."""

from pathlib import Path

import numpy as np
import pytest

from calibration.dataset import LabelError, index_dataset, parse_attributes, parse_path
from edge_agent.audio.wavio import write_wav
from tests.conftest import DATA, SHARED


def test_dcase2023_names():
    c = parse_path(Path("/d/valve/train/section_00_source_train_normal_0001_pat_01.wav"))
    assert (c.machine, c.section, c.domain, c.split, c.condition) == ("valve", "00", "source", "train", "normal")
    assert c.attribute_dict == {"pat": "01"}
    c = parse_path(Path("/d/ToyCar/test/section_00_target_test_anomaly_0012_car_C2_spd_31V_mic_1.wav"))
    assert (c.domain, c.split, c.condition) == ("target", "test", "anomaly")
    assert c.attribute_dict == {"car": "C2", "spd": "31V", "mic": "1"}
    c = parse_path(Path("/d/fan/train/section_00_source_train_normal_0040_m-n_X.wav"))
    assert c.attribute_dict == {"m-n": "X"}
    c = parse_path(Path("/d/slider/train/section_00_source_train_normal_0853_vel_500_ac_0.30.wav"))
    assert c.attribute_dict == {"vel": "500", "ac": "0.30"}


def test_dcase2024_no_attribute_and_eval_names():
    c = parse_path(Path("/d/3DPrinter/train/section_00_source_train_normal_0005_noAttribute.wav"))
    assert c.attributes == () and c.attribute_string == "noAttribute"
    c = parse_path(Path("/d/valve/test/section_00_0042.wav"))
    assert (c.section, c.domain, c.condition) == ("00", "unknown", "unknown")


def test_dcase2020_names():
    c = parse_path(Path("/d/fan/test/anomaly_id_04_00000006.wav"))
    assert (c.machine, c.section, c.domain, c.split, c.condition, c.scheme) == (
        "fan",
        "id_04",
        "source",
        "test",
        "anomaly",
        "dcase2020",
    )
    assert parse_path(Path("/d/pump/train/normal_id_00_00000001.wav")).condition == "normal"


def test_mimii_layouts():
    c = parse_path(Path("/m/fan/id_02/abnormal/00000031.wav"))
    assert (c.machine, c.section, c.condition, c.scheme) == ("fan", "id_02", "anomaly", "mimii")
    c = parse_path(Path("/m/fan/id_02/normal/00000031.wav"))
    assert c.condition == "normal"
    c = parse_path(Path("/m/mimii_8ch/fan_id_00_abnormal_00000000.wav"))
    assert (c.machine, c.section, c.condition) == ("fan", "id_00", "anomaly")


def test_odd_attribute_tokens_are_kept():
    assert parse_attributes("a_1_b") == (("a", "1"), ("tag", "b"))
    assert parse_attributes("noAttribute") == ()


def test_misnamed_raises():
    with pytest.raises(LabelError, match="no known scheme"):
        parse_path(Path("/d/fan/train/recording.wav"))


def test_index_skips_and_counts_bad_files(tmp_path):
    root = tmp_path / "ds"
    (root / "valve" / "train").mkdir(parents=True)
    (root / "valve" / "test").mkdir(parents=True)
    for f in (DATA / "valve" / "train").glob("*.wav"):
        (root / "valve" / "train" / f.name).write_bytes(f.read_bytes())
    (root / "valve" / "train" / "section_00_source_train_normal_0099_pat_00.wav").write_bytes(b"RIFF garbage")
    write_wav(root / "valve" / "test" / "oops.wav", np.zeros(1600), 16000)
    mimii = root / "pump" / "id_00" / "normal"
    mimii.mkdir(parents=True)
    write_wav(mimii / "00000000.wav", np.random.default_rng(0).normal(0, 0.1, 1600), 16000)
    idx = index_dataset(root)
    assert len(idx.clips) == 6
    assert len(idx.skipped) == 2
    reasons = {p.name: r for p, r in idx.skipped}
    assert "no known scheme" in reasons["oops.wav"]
    assert "not a readable WAV" in reasons["section_00_source_train_normal_0099_pat_00.wav"]
    assert {c.group for c in idx.clips} == {"valve", "pump"}
    assert "2 skipped" in idx.summary()


def test_index_real_shared_data():
    if not SHARED.exists():
        pytest.skip("../shared/data not here")
    idx = index_dataset(SHARED)
    assert not idx.skipped
    valve = idx.select(group="dcase2023t2/valve")
    assert len([c for c in valve if c.split == "train"]) == 37
    assert {c.domain for c in valve} == {"source", "target"}
    assert {c.scheme for c in idx.clips} >= {"dcase2023", "dcase2020", "mimii-flat"}
