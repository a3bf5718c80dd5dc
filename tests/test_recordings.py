"""Each replayed file is its own recording: no window spans two files, the detector starts afresh at
every join, an alarm open at the end of a file ends there with its name, evidence never mixes two
recordings, and ``input.continuous`` keeps consecutive pieces of one recording together."""

from __future__ import annotations

import numpy as np

from edge_agent.audio.recordings import Recordings
from edge_agent.audio.wavio import read_wav
from tests.conftest import DEMO
from tests.test_run_replay import cli

NORMAL = DEMO / "replay" / "01_normal_id_00_00000018.wav"
NORMAL2 = DEMO / "replay" / "04_normal_id_00_00000011.wav"
ANOMALY = DEMO / "replay" / "02_anomaly_id_00_00000002.wav"


def _folder(tmp_path, *files):
    d = tmp_path / "rec"
    d.mkdir()
    for i, f in enumerate(files):
        (d / f"{i:02d}_{f.name}").symlink_to(f)
    return d


def _run(tmp_path, state, folder, continuous=False, evidence="{enabled: false}"):
    cfg = tmp_path / f"c{int(continuous)}.yaml"
    cfg.write_text(
        f"state_dir: {state}\nengine: cpu\nevidence: {evidence}\nmachines:\n  fan01:\n"
        f"    input: {{file: {folder}, realtime: false, continuous: {str(continuous).lower()}}}\n"
    )
    return cli("run", "--config", cfg, "--scores")


def _scores(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ": score " in ln]


def test_two_ten_second_recordings_give_18_windows_not_19(tmp_path, calibrated):
    folder = _folder(tmp_path, NORMAL, NORMAL2)
    r = _run(tmp_path, calibrated, folder)
    assert r.returncode == 0, r.stderr
    assert len(_scores(r.stdout)) == 18  # 9 windows of 2 s at hop 1 s in each 10 s file
    assert "recording 00_01_normal_id_00_00000018.wav: 9 windows, 0 alarm(s)" in r.stderr
    assert "recording 01_04_normal_id_00_00000011.wav: 9 windows, 0 alarm(s)" in r.stderr
    assert "20.0 s of audio, 18 windows" in r.stderr
    r = _run(tmp_path, calibrated, folder, continuous=True)  # one recording in pieces: windows span the join
    assert r.returncode == 0 and len(_scores(r.stdout)) == 19, r.stderr
    assert "recording 00_" not in r.stderr


def test_the_detector_starts_afresh_at_a_join(tmp_path, sensitive):
    """An anomalous recording, then a normal one: the alarm ends at the join, named, and nothing of
    the anomaly's smoothed scores carries into the next recording."""
    folder = _folder(tmp_path, ANOMALY, NORMAL)
    r = _run(tmp_path, sensitive, folder)
    assert r.returncode == 0, r.stderr
    assert "ALARM START" in r.stdout
    end = next(ln for ln in r.stdout.splitlines() if "ALARM END" in ln)
    assert "(end of recording 00_02_anomaly_id_00_00000002.wav)" in end
    second = _scores(r.stdout)[9:]
    assert len(second) == 9 and all(ln.endswith(" normal") for ln in second)
    # the same files as one continuous recording: the alarm outlives the join (cleared by the rule)
    r = _run(tmp_path, sensitive, folder, continuous=True)
    assert r.returncode == 0, r.stderr
    assert "end of recording 00_" not in r.stdout and "ALARM END" in r.stdout
    assert any(ln.endswith(" anomaly") for ln in _scores(r.stdout)[9:11])


def test_an_alarm_open_when_the_replay_ends_names_its_recording(tmp_path, sensitive):
    r = _run(tmp_path, sensitive, _folder(tmp_path, NORMAL, ANOMALY))
    assert r.returncode == 0, r.stderr
    end = next(ln for ln in r.stdout.splitlines() if "ALARM END" in ln)
    assert "(end of recording 01_02_anomaly_id_00_00000002.wav)" in end


def test_evidence_holds_one_recording(tmp_path, sensitive):
    """An alarm near the end of a file: its evidence is written at the join with what that file held
    (post-roll cut short), never with the next file's audio."""
    folder = _folder(tmp_path, ANOMALY, NORMAL)
    st = tmp_path / "st"
    (st / "machines").mkdir(parents=True)
    (st / "machines" / "fan01").symlink_to(sensitive / "machines" / "fan01")
    r = _run(tmp_path, st, folder, evidence="{pre_seconds: 30, post_seconds: 30}")
    assert r.returncode == 0, r.stderr
    wavs = sorted((st / "evidence" / "fan01").glob("*.wav"))
    assert len(wavs) == 1
    x, sr = read_wav(wavs[0])
    assert len(x) / sr <= 10.0 + 1e-6  # at most the anomalous file, though 60 s were asked for
    clip, _ = read_wav(ANOMALY)
    # it is the anomalous file's audio (as 16-bit PCM), not the normal one's
    assert np.allclose(x[-len(x) :, 0], clip[-len(x) :].mean(axis=1), atol=2e-4)


def test_split_cuts_frames_at_each_recording_start_once():
    r = Recordings()
    frames = np.arange(10)[:, None]
    starts = [(0, "a"), (4, "b"), (8, "c")]
    pieces = []
    for piece, start in r.split(frames, 0, starts):
        if start is not None:
            r.begin(*start)
            pieces.append(("begin", start[1], r.take_ended()))
        else:
            pieces.append(piece.ravel().tolist())
    assert pieces == [[0, 1, 2, 3], ("begin", "b", "a"), [4, 5, 6, 7], ("begin", "c", "b"), [8, 9]]
    # the next read: a start already applied is not applied again; one at the very first frame is
    out = r.split(np.arange(10, 14)[:, None], 10, starts + [(10, "d")])
    assert [s for _, s in out] == [(10, "d"), None] and out[1][0].ravel().tolist() == [10, 11, 12, 13]
    r.begin(10, "d")
    assert r.split(np.arange(14, 16)[:, None], 14, starts + [(10, "d")])[0][1] is None


def test_a_replay_reports_the_recording_starts_from_a_position_on(tmp_path):
    import time

    from edge_agent.audio.replay import ReplaySource

    src = ReplaySource("m", _folder(tmp_path, NORMAL, NORMAL2), realtime=False)
    src.start()
    t_end = time.monotonic() + 20
    while not src.finished and time.monotonic() < t_end:
        src.ring.read()  # as the stream does, so the replay never waits for room
        time.sleep(0.01)
    src.stop()
    starts = src.recording_starts()
    assert [name for _, name in starts] == ["00_01_normal_id_00_00000018.wav", "01_04_normal_id_00_00000011.wav"]
    assert starts[0][0] == 0 and starts[1][0] == 10 * 16000
    assert src.recording_starts(starts[1][0]) == starts[1:] and src.recording_starts(starts[1][0] + 1) == []
