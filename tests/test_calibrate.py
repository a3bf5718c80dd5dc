"""`edge-agent calibrate` and `bank show` on real clips, bad clips among good ones, a bank from
another model, a target enrolment on top, and live calibration through the PulseAudio null sink."""

import re

import numpy as np
import pytest

from edge_agent.audio.convert import resample
from edge_agent.audio.wavio import read_wav, write_wav
from edge_agent.scoring.bank import MemoryBank, bank_path
from tests.conftest import DATA, DEMO, shared
from tests.test_run_replay import cli


def test_enrol_valve_source_and_target_then_target_on_top(tmp_path):
    valve = shared("dcase2023t2", "valve", "train")
    st = tmp_path / "state"
    src = sorted(valve.glob("*source*"))
    tgt = sorted(valve.glob("*target*"))
    r = cli("calibrate", "--machine", "valve01", "--from", *src, *tgt[:5], "--state-dir", st, block_torch=True)
    assert r.returncode == 0, r.stderr
    bank = MemoryBank.load(bank_path(st, "valve01"))
    c = bank.counts()
    assert c["source_centre"] == 16 and c["source_sample"] == 0
    assert c["target_sample"] == 5 * 9  # every window of the five 10 s target clips (2 s windows, hop 1 s)
    assert bank.meta["enrolled_clips"] == {"source": 27, "target": 5}
    assert bank.version == 1 and 0 < bank.threshold < 1
    # the default threshold: 1 false alarm a week, estimated with the alarm rule over held-out clips
    rule = bank.meta["threshold_rule"]
    assert (
        rule["rule"] == "false_alarms_per_day" and rule["value"] == pytest.approx(1 / 7) and rule["smooth_windows"] == 5
    )
    assert bank.meta["alarm_rate"]["clips"] == 32 and len(bank.meta["alarm_rate"]["per_day_ci"]) == 2
    assert "budget of 1 false alarms a week" in r.stdout and "is extrapolated from" in r.stdout
    assert (st / "machines" / "valve01" / "calibration.png").stat().st_size > 10_000
    assert "threshold" in r.stdout and "expected false alarms" in r.stdout
    # a later target enrolment adds to the bank
    r = cli(
        "calibrate",
        "--machine",
        "valve01",
        "--from",
        *tgt[5:],
        "--domain",
        "target",
        "--state-dir",
        st,
        block_torch=True,
    )
    assert r.returncode == 0, r.stderr
    bank2 = MemoryBank.load(bank_path(st, "valve01"))
    assert bank2.counts()["target_sample"] == 10 * 9 and bank2.counts()["source_centre"] == 16
    assert bank2.version == 2 and "added to the existing bank" in r.stdout
    # --replace starts over
    r = cli(
        "calibrate",
        "--machine",
        "valve01",
        "--from",
        *tgt[:3],
        "--domain",
        "target",
        "--replace",
        "--state-dir",
        st,
        block_torch=True,
    )
    assert r.returncode == 0, r.stderr
    assert MemoryBank.load(bank_path(st, "valve01")).counts() == {
        "source_centre": 0,
        "source_sample": 0,
        "target_centre": 0,
        "target_sample": 27,
    }
    show = cli("bank", "show", "--machine", "valve01", "--state-dir", st)
    assert show.returncode == 0 and "target samples 27" in show.stdout


def test_bad_clips_are_listed_and_skipped(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    good = sorted((DATA / "valve" / "train").glob("*source*"))
    for f in good:
        (clips / f.name).write_bytes(f.read_bytes())
    (clips / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    x, sr = read_wav(good[0])
    stereo = resample(x[:, 0], sr, 44100)
    write_wav(clips / "cd_quality_stereo.wav", np.stack([stereo, stereo], 1), 44100)
    write_wav(clips / "silent.wav", np.zeros(4 * sr), sr)
    write_wav(clips / "short.wav", x[: sr // 2, 0], sr)
    write_wav(clips / "clipped.wav", np.clip(x[:, 0] * 200, -1, 1), sr)
    r = cli(
        "calibrate", "--machine", "v", "--from", clips, "--state-dir", tmp_path / "st", "--no-plot", block_torch=True
    )
    assert r.returncode == 0, r.stderr
    assert "skipped " + str(clips / "corrupt.wav") + ": not a readable WAV" in r.stderr
    assert "silent.wav: silent" in r.stderr
    assert "short.wav: too short: 0.50 s" in r.stderr
    assert "clipped.wav: clipped" in r.stderr
    assert "cd_quality_stereo.wav" not in r.stderr  # 44.1 kHz stereo is converted, not refused
    bank = MemoryBank.load(bank_path(tmp_path / "st", "v"))
    assert bank.meta["enrolled_clips"] == {"source": 4} and bank.meta["skipped_clips"] == 4


def test_too_few_windows_fails_with_exit_2(tmp_path):
    one = sorted((DATA / "valve" / "train").glob("*.wav"))[0]
    r = cli("calibrate", "--machine", "v", "--from", one, "--state-dir", tmp_path, "--hop", "4")
    assert r.returncode == 2
    assert "usable windows" in r.stderr and "need at least 5" in r.stderr
    # the clips left out are still listed before the error, so the user knows what to fix
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.wav").write_bytes(one.read_bytes())
    (clips / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    r = cli("calibrate", "--machine", "v", "--from", clips, "--state-dir", tmp_path, "--hop", "4")
    assert r.returncode == 2 and "need at least 5" in r.stderr
    assert "skipped " + str(clips / "corrupt.wav") + ": not a readable WAV" in r.stderr
    assert r.stderr.index("skipped ") < r.stderr.index("need at least 5")
    r = cli("calibrate", "--machine", "v", "--from", tmp_path / "nothing")
    assert r.returncode == 2 and "no such file or folder" in r.stderr
    r = cli("calibrate", "--machine", "bad id!", "--from", one)
    assert r.returncode == 2 and "machine id" in r.stderr


def test_bank_from_another_model_is_refused(tmp_path, tiny_bundle):
    st = tmp_path / "st"
    r = cli(
        "calibrate",
        "--machine",
        "v",
        "--from",
        DATA / "valve" / "train",
        "--state-dir",
        st,
        "--model",
        tiny_bundle,
        "--no-plot",
    )
    assert r.returncode == 0, r.stderr
    r = cli("calibrate", "--machine", "v", "--from", DATA / "valve" / "train", "--state-dir", st, "--no-plot")
    assert r.returncode == 2 and "recalibrate" in r.stderr and "was made with model tiny" in r.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"state_dir: {st}\nmachines:\n  v:\n    input: {{file: {DATA / 'valve' / 'test'}, realtime: false}}\n"
    )
    r = cli("run", "--config", cfg)
    assert r.returncode == 2 and "recalibrate" in r.stderr


def test_false_alarm_budget_sets_a_higher_threshold(tmp_path):
    st = tmp_path / "st"
    a = cli(
        "calibrate",
        "--machine",
        "f",
        "--from",
        DEMO / "enrol",
        "--state-dir",
        st,
        "--no-plot",
        "--percentile",
        "0.9",
        block_torch=True,
    )
    t90 = MemoryBank.load(bank_path(st, "f")).threshold
    b = cli(
        "calibrate",
        "--machine",
        "f",
        "--from",
        DEMO / "enrol",
        "--state-dir",
        st,
        "--no-plot",
        "--replace",
        "--false-alarms-per-day",
        "0.1",
        block_torch=True,
    )
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    bank = MemoryBank.load(bank_path(st, "f"))
    assert bank.threshold > t90
    assert abs(bank.meta["expected_alarms_per_day"] - 0.1) < 0.01
    assert "0.1 per day" in b.stdout


def test_live_calibration_through_the_null_sink(pulse, tmp_path):
    st = tmp_path / "st"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {st}\nengine: cpu\nmachines:\n  fan01:\n    input: {{device: pulse}}\n")
    # three real clips back to back (30 s), so the 8 s recording still hears the fan however long the
    # agent takes to start on a loaded machine
    clips = [read_wav(p) for p in sorted((DEMO / "enrol").glob("*.wav"))[:3]]
    write_wav(tmp_path / "fan.wav", np.concatenate([x for x, _ in clips]), clips[0][1])
    player = pulse(tmp_path / "fan.wav")
    try:
        r = cli(
            "calibrate",
            "--machine",
            "fan01",
            "--config",
            cfg,
            "--seconds",
            "8",
            "--no-plot",
            env=pulse.env,
            timeout=120,
        )
    finally:
        player.terminate()
        player.wait(20)
    assert r.returncode == 0, r.stderr
    assert "recording fan01" in r.stderr and "dBFS" in r.stderr
    bank = MemoryBank.load(bank_path(st, "fan01"))
    assert bank.meta["enrolled_windows"]["source"] >= 5


def test_per_domain_normalisation_uses_enrolment_statistics(tmp_path):
    st = tmp_path / "st"
    r = cli(
        "calibrate",
        "--machine",
        "v",
        "--from",
        DATA / "valve" / "train",
        "--state-dir",
        st,
        "--no-plot",
        "--normalise-domains",
        "--hop",
        "0.5",
        block_torch=True,
    )
    assert r.returncode == 0, r.stderr
    bank = MemoryBank.load(bank_path(st, "v"))
    assert bank.normalise_domains and set(bank.domain_stats) == {"source", "target"}
    assert all(sd > 0 for _, sd in bank.domain_stats.values())
    assert re.search(r"domain normalisation\s+on", r.stdout)
    # source-only enrolment cannot normalise per domain, and says so instead of failing
    r = cli(
        "calibrate",
        "--machine",
        "w",
        "--from",
        *sorted((DATA / "valve" / "train").glob("*source*")),
        "--state-dir",
        st,
        "--no-plot",
        "--normalise-domains",
        "--hop",
        "0.5",
        block_torch=True,
    )
    assert r.returncode == 0 and "needs enrolment in both domains" in r.stdout
