"""Machine off and muted input are states, not anomalies: digital silence makes a machine
`no_audio` at once and a level far below the enrolled range makes it `off`, before any score is
taken; an open alarm ends with that reason. Real clips through `edge-agent run`."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.audio.convert import level_dbfs
from edge_agent.audio.wavio import read_wav, write_wav
from edge_agent.scoring.bank import MemoryBank, bank_path
from tests.conftest import DEMO
from tests.test_run_replay import cli


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    st = tmp_path_factory.mktemp("states")
    r = cli("calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", st, "--no-plot")
    assert r.returncode == 0, r.stderr
    assert "enrolled level" in r.stdout and "far below it the machine counts as off" in r.stdout
    return st


def _run(st, folder, tmp_path):
    # the files are pieces of one input (a machine that goes silent, then stops): one recording
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"state_dir: {st}\nengine: cpu\nmachines:\n  fan01:\n"
        f"    input: {{file: {folder}, realtime: false, continuous: true}}\n"
    )
    r = cli("run", "--config", cfg)
    assert r.returncode == 0, r.stderr
    return [ln.split(" ", 1)[1] for ln in r.stdout.splitlines()]


def test_silence_and_a_machine_30_db_below_the_enrolled_range_never_alarm(bank_dir, tmp_path):
    low = MemoryBank.load(bank_path(bank_dir, "fan01")).meta["levels_dbfs"]["low"]
    normal, sr = read_wav(DEMO / "replay" / "01_normal_id_00_00000018.wav")
    anomaly, _ = read_wav(DEMO / "replay" / "02_anomaly_id_00_00000002.wav")
    quiet = anomaly[:, 0] * 10 ** (
        (low - 30 - level_dbfs(anomaly)) / 20
    )  # a real anomalous clip, 30 dB below the range
    assert level_dbfs(quiet) == pytest.approx(low - 30, abs=0.1)
    d = tmp_path / "stream"
    d.mkdir()
    for i, x in enumerate(
        [normal[:, 0], np.zeros(10 * sr), normal[:, 0], quiet, quiet, normal[:, 0], np.zeros(15 * sr), normal[:, 0]]
    ):
        write_wav(d / f"{i:02d}.wav", x, sr)
    lines = _run(bank_dir, d, tmp_path)
    assert not [ln for ln in lines if "ALARM" in ln], lines
    states = [ln.split("state ", 1)[1] for ln in lines if ": state " in ln]
    assert [s.split()[0] for s in states] == ["normal", "no_audio", "normal", "off", "normal", "no_audio", "normal"], (
        states
    )
    assert "digital silence" in states[1] and "machine off: level" in states[3] and "sound is back" in states[2]


def test_an_open_alarm_ends_when_the_input_goes_silent_or_the_machine_stops(bank_dir, tmp_path):
    anomaly, sr = read_wav(DEMO / "replay" / "02_anomaly_id_00_00000002.wav")
    d = tmp_path / "stream"
    d.mkdir()
    # 20 s of it: after a start no window counts until the running median is full (the warm-up), and
    # at the 1-a-week threshold the clip's first pass no longer raises the alarm on its own
    twice = np.concatenate([anomaly[:, 0], anomaly[:, 0]])
    write_wav(d / "0.wav", twice, sr)
    write_wav(d / "1.wav", np.zeros(5 * sr), sr)
    write_wav(d / "2.wav", twice, sr)
    write_wav(d / "3.wav", anomaly[:, 0] * 1e-2, sr)  # 40 dB down: the machine stopped (not digital silence)
    lines = _run(bank_dir, d, tmp_path)
    alarms = [ln for ln in lines if "ALARM" in ln]
    assert [a.split("ALARM ")[1].split()[0] for a in alarms] == ["START", "END", "START", "END"], alarms
    assert "(digital silence" in alarms[1] and "(machine off: level" in alarms[3]
