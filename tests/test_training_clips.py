"""Clips a model was trained on: bundles list their fingerprints, and calibrate fits the threshold on
the clips the model has not heard (held-out scores of learnt clips understate new sound's)."""

import json
import shutil

import numpy as np
import pytest
from scipy.io import wavfile

from edge_agent.audio.fingerprint import audio_fingerprint
from edge_agent.audio.wavio import read_wav
from edge_agent.model.bundle import Bundle
from tests.conftest import DATA, shared


def _fp(path):
    return audio_fingerprint(*read_wav(path))


def test_the_fingerprint_follows_the_samples_not_the_file(tmp_path):
    src = sorted((DATA / "valve" / "train").glob("*.wav"))[0]
    sr, x = wavfile.read(src)
    assert x.dtype == np.int16
    wavfile.write(tmp_path / "renamed.wav", sr, x)
    wavfile.write(tmp_path / "float.wav", sr, (x / 32768.0).astype(np.float32))  # re-encoded, same samples
    y = x.copy()
    y[1000] += 1
    wavfile.write(tmp_path / "changed.wav", sr, y)
    wavfile.write(tmp_path / "stereo.wav", sr, np.stack([x, x], axis=1))
    wavfile.write(tmp_path / "rate.wav", sr // 2, x)
    fp = _fp(src)
    assert len(fp) == 32 and _fp(tmp_path / "renamed.wav") == fp and _fp(tmp_path / "float.wav") == fp
    assert len({fp, _fp(tmp_path / "changed.wav"), _fp(tmp_path / "stereo.wav"), _fp(tmp_path / "rate.wav")}) == 4


def test_an_exported_model_lists_the_clips_it_was_trained_on(tiny_bundle):
    b = Bundle.load(tiny_bundle)  # trained on tests/data/valve's training clips only
    train = {_fp(p) for p in (DATA / "valve" / "train").glob("*.wav")}
    test = {_fp(p) for p in (DATA / "valve" / "test").glob("*.wav")}
    assert b.trained_on() == train and not (b.trained_on() & test)
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert m["training"]["clips_listed"] == len(train) and "training_clips.txt" in m["files"]


def test_the_built_in_models_list_their_training_clips():
    valve = shared("dcase2023t2", "valve")
    default, fast = Bundle.load("default"), Bundle.load("fast")
    enrolled = {_fp(p) for p in (valve / "train").glob("*.wav")}
    unseen = {_fp(p) for p in (valve / "test").glob("*.wav")}
    assert enrolled <= default.trained_on() and not (unseen & default.trained_on())
    assert default.trained_on() <= fast.trained_on() and not (unseen & fast.trained_on())  # and its teacher's


def test_the_threshold_is_fitted_on_the_clips_the_model_has_not_heard():
    from calibration.enrol import fit_selection

    groups = np.array(list("aaabbbcccdddeee"))  # the clip of each leave-one-out score
    mask, info = fit_selection(groups, {"a", "b"})
    assert mask.tolist() == [False] * 6 + [True] * 9
    assert info["heard_clips"] == 2 and info["fitted_on_clips"] == 3 and "fitted on the 3" in info["note"]
    # too few clips left: all are used, and calibrate is told to warn
    mask, info = fit_selection(groups, {"a", "b", "c"})
    assert mask.all() and "warning" in info and "learning period" in info["warning"]
    mask, info = fit_selection(groups, set())
    assert mask.all() and info == {}


def test_calibrate_fits_on_unheard_clips_and_warns_when_there_are_none(tmp_path, capsys):
    from calibration.enrol import pick_threshold
    from calibration.policy import ThresholdPolicy
    from calibration.service import CalibrationRequest, calibrate
    from edge_agent.cli import main
    from edge_agent.engine import OnnxEngine

    fan = shared("mimii", "fan")
    heard = sorted((fan / "train").glob("*.wav"))[:4]  # the default model was trained on these
    unseen = sorted((fan / "test").glob("normal_*.wav"))[:4]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in heard + unseen:
        shutil.copy(p, mixed / p.name)
    engine = OnnxEngine(Bundle.load("default"), "cpu")
    c = calibrate(CalibrationRequest("fan01", paths=(mixed,), progress=False, find_outliers=False), engine)
    overlap = c.bank.meta["training_overlap"]
    assert overlap == {"heard_clips": 4, "clips": 8, "fitted_on_clips": 4}
    assert sorted(c.bank.meta["heard_in_training"]) == sorted(str(mixed / p.name) for p in heard)
    assert len(c.bank.embeddings) > 0 and c.result.fitted is not None
    scores, groups = c.result.fit_scores()
    assert all("normal_id" in g for g in groups)  # only the test clips: those the model has not heard
    assert c.bank.threshold == pytest.approx(pick_threshold(scores, ThresholdPolicy(), groups)[1])

    # only clips it was trained on: calibrate still enrols them, and says what that costs
    only = tmp_path / "only"
    only.mkdir()
    for p in heard:
        shutil.copy(p, only / p.name)
    rc = main(["calibrate", "--machine", "fan01", "--state-dir", str(tmp_path / "state"), "--from", str(only)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "warning: 4 of 4 enrolment clips were used to train the model" in out
    assert "edge-agent calibrate --machine fan01 --learn 24h" in out


def test_held_out_and_excluded_clips_stay_out_of_training():
    from export.dataindex import select_clips

    every, _ = select_clips([DATA])
    held, _ = select_clips([DATA], hold_out=0.3)  # every 3rd clip of each machine folder, by name
    for group in {c.group for c in every}:
        mine = sorted(str(c.path) for c in every if c.group == group)
        assert sorted(str(c.path) for c in held if c.group == group) == [p for i, p in enumerate(mine) if i % 3 != 2]
    assert select_clips([DATA], exclude=["valve"])[0] == []  # the one machine folder here
    assert len(select_clips([DATA], exclude=["pump"])[0]) == len(every)


def test_a_bundle_exported_before_the_list_gets_it_from_its_recorded_selection(tiny_bundle_copy):
    from edge_agent.model.bundle import write_manifest
    from export.training_clips import record

    b = Bundle.load(tiny_bundle_copy)
    listed = b.trained_on()
    (tiny_bundle_copy / "training_clips.txt").unlink()
    training = {k: v for k, v in b.manifest.training.items() if not k.startswith("clips_")}
    write_manifest(tiny_bundle_copy, b.manifest.model_copy(update={"training": training}))
    assert Bundle.load(tiny_bundle_copy).trained_on() == frozenset()
    r = record(tiny_bundle_copy, log=lambda *_: None)
    assert Bundle.load(tiny_bundle_copy).trained_on() == listed and r == {"listed": len(listed), "not_identified": {}}


def test_train_refuses_a_hold_out_that_leaves_little_to_train_on(tmp_path, capsys):
    from edge_agent.cli import main

    rc = main(["train", "--data", str(DATA), "--out", str(tmp_path / "m.ckpt"), "--hold-out", "0.9"])
    assert rc == 2 and "--hold-out 0.9" in capsys.readouterr().err


def test_train_refuses_a_recipe_config_it_cannot_build(tmp_path, capsys):
    from edge_agent.cli import main

    base = ["train", "--recipe", "dualbranch", "--data", str(DATA), "--out", str(tmp_path / "m.ckpt")]
    assert main([*base, "--recipe-config", '{"spectrogram": "mel"}']) == 2
    assert "spectrogram must be 'stft' or 'logmel'" in capsys.readouterr().err
    assert main([*base, "--recipe-config", '{"no_such_setting": 1}']) == 2
    err = capsys.readouterr().err
    assert "--recipe-config" in err and "no_such_setting" in err
    assert not (tmp_path / "m.ckpt").exists()


def test_clips_added_to_a_bank_keep_track_of_what_the_model_heard(tmp_path):
    from calibration.service import CalibrationRequest, calibrate
    from edge_agent.engine import OnnxEngine

    fan = shared("mimii", "fan")
    heard = sorted((fan / "train").glob("*.wav"))[:4]
    unseen = sorted((fan / "test").glob("normal_*.wav"))[:4]
    engine = OnnxEngine(Bundle.load("default"), "cpu")
    first = calibrate(CalibrationRequest("fan01", paths=tuple(heard), progress=False, find_outliers=False), engine)
    assert first.bank.meta["training_overlap"]["heard_clips"] == 4 and "warning" in first.bank.meta["training_overlap"]
    # a later enrolment of new recordings joins the bank: the threshold is refitted on those alone
    req = CalibrationRequest("fan01", paths=tuple(unseen), progress=False, find_outliers=False)
    second = calibrate(req, engine, existing=first.bank)
    assert second.bank.meta["training_overlap"] == {"heard_clips": 4, "clips": 8, "fitted_on_clips": 4}
    assert sorted(second.bank.meta["heard_in_training"]) == sorted(map(str, heard))
    _, groups = second.result.fit_scores()
    assert {g.split(":", 1)[1] for g in groups} == {f"v2:{p}" for p in unseen}


def test_recording_the_clips_of_a_bundle_that_records_no_selection_says_what_to_do(tmp_path, tiny_bundle_copy, capsys):
    from edge_agent.model.bundle import write_manifest
    from export.training_clips import main

    b = Bundle.load(tiny_bundle_copy)
    write_manifest(tiny_bundle_copy, b.manifest.model_copy(update={"training": {}}))
    assert main([str(tiny_bundle_copy)]) == 2
    assert "records no training data folders" in capsys.readouterr().err
    assert main([str(tmp_path / "nothing")]) == 2
    assert "error:" in capsys.readouterr().err
