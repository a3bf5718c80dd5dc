"""Evidence for every alarm: the audio around its start and a spectrogram with the scores, written
beside the state, bounded in size, and never at the cost of the alarm."""

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from edge_agent.alarms.evidence import History, enforce_budget, spectrogram_columns
from edge_agent.audio.wavio import read_wav
from edge_agent.audio.windows import frame_windows
from edge_agent.model.frontend import stft_magnitude
from tests.conftest import DEMO
from tests.test_run_replay import cli


def test_history_rebuilds_the_stream_from_overlapping_windows():
    sr = 100
    x = np.arange(3000, dtype=np.float32) / 32768  # 30 s, each sample its own index as 16-bit PCM
    h = History(sr, seconds=12.0)
    for i, w in enumerate(frame_windows(x, 2 * sr, sr)):  # 2 s windows, hop 1 s
        h.add(w, offset=2.0 + i)
    assert h.end == 30.0
    pcm = np.arange(3000, dtype=np.int16)  # held as the 16-bit samples the WAV gets
    got, first = h.audio(20.0, 25.0)
    assert first == 20.0 and got.dtype == np.int16 and np.array_equal(got, pcm[2000:2500])
    got, first = h.audio(0.0, 40.0)  # clipped to what is held: at least the last 12 s
    assert 17.0 <= first <= 18.0 and got[-1] == pcm[-1] and np.array_equal(got, pcm[int(first * sr) :])


def test_history_after_a_gap_takes_the_whole_window():
    h = History(10, seconds=60.0)
    h.add(np.full(20, 0.25, np.float32), offset=2.0)
    h.add(np.full(20, 0.5, np.float32), offset=10.0)  # 8 s later: no overlap
    got, _ = h.audio(0.0, 10.0)
    assert len(got) == 40 and got[0] == 0.25 * 32768 and got[-1] == 0.5 * 32768


def test_history_holds_copies_not_the_blocks_the_windows_were_cut_from():
    """A window's samples are a view into the block the source delivered (megabytes in a fast
    replay); the history keeps a second of it, not the block (that grew a fast replay's RSS by
    55 MB in two minutes)."""
    import weakref

    sr = 100
    h = History(sr, seconds=5.0)
    block = np.zeros(1_000_000, np.float32)
    gone = weakref.ref(block)
    for k in range(3):
        end = 200 + k * sr
        h.add(block[end - 2 * sr : end], end / sr)  # 2 s windows at a 1 s hop, cut from one block
    del block
    assert gone() is None, "the history keeps the source's whole block alive"
    assert h.size == 4 * sr


def test_the_budget_deletes_the_oldest_files_first(tmp_path):
    d = tmp_path / "evidence" / "m"
    d.mkdir(parents=True)
    for i in range(5):
        f = d / f"{i}.wav"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (1000 + i, 1000 + i))
    (d / "notes.txt").write_bytes(b"x" * 5000)  # not evidence: never touched
    gone = enforce_budget(tmp_path / "evidence", 2500)
    assert [f.name for f in gone] == ["0.wav", "1.wav", "2.wav"]
    assert sorted(f.name for f in d.iterdir()) == ["3.wav", "4.wav", "notes.txt"]


def _config(path, state, extra=""):
    # continuous: the demo's clips as one recording, so the evidence's pre- and post-roll may reach
    # into the clips beside the alarm's (each file its own recording is tested in test_recordings)
    path.write_text(
        f"state_dir: {state}\nengine: cpu\n{extra}machines:\n  fan01:\n"
        f"    input: {{file: {DEMO / 'replay'}, realtime: false, continuous: true}}\n"
    )
    return path


def test_an_alarm_on_real_clips_keeps_the_audio_and_a_spectrogram(calibrated, tmp_path):
    cfg = _config(tmp_path / "c.yaml", calibrated, "evidence: {pre_seconds: 8, post_seconds: 6}\n")
    # with scipy refused: the front end's FFTs (ducc0) and mel bands (numpy), the WAV I/O (wave)
    # and the spectrogram need none of it, and its imports were 20 MB of a running agent's peak
    r = cli("run", "--config", cfg, block=("scipy",))
    assert r.returncode == 0, r.stderr
    assert "scipy" not in r.stderr
    assert "numpy's BLAS runs on the calling thread" in r.stderr  # edge_agent/model/blas.py
    m = re.search(r"ALARM START (\w+) .*; evidence (\S+\.wav) \(\+ \.png\)", r.stdout)
    assert m, r.stdout
    wav = m.group(2)
    assert wav == str(calibrated / "evidence" / "fan01" / f"{wav.rsplit('/', 1)[1]}") and m.group(1) in wav
    x, sr = read_wav(wav)
    assert sr == 16000 and len(x) / sr == pytest.approx(8 + 6, abs=0.05)  # pre + post, at the model's rate
    assert np.abs(x).max() > 0.01  # real sound, not padding
    with Image.open(wav[:-4] + ".png") as png:
        assert png.format == "PNG" and png.size[0] >= 900 and png.size[1] >= 400
        # the spectrogram is drawn in colour, not left blank
        assert len(np.unique(np.asarray(png.convert("RGB").crop((60, 60, 900, 280))).reshape(-1, 3), axis=0)) > 100


def test_the_spectrogram_is_the_full_one_pooled_to_the_image_width():
    rng = np.random.default_rng(0)
    x = (0.01 * rng.standard_normal(16000 * 40 + 123)).astype(np.float32)
    x[300_000:300_040] += 0.9  # a 2.5 ms click: one frame in a column of about three
    full = stft_magnitude(x, 512, 256)
    for columns in (900, 7, 1, 5000):  # fewer columns than frames, and more (kept as they are)
        got = spectrogram_columns(x, columns, block=64)
        edges = np.linspace(0, len(full), min(columns, len(full)) + 1).astype(int)
        want = 20 * np.log10(np.maximum.reduceat(full, edges[:-1], axis=0) + 1e-9)
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-3)
    # the click's column stands out in the pooled image as in the frames
    got = spectrogram_columns(x, 900)
    col = int(300_020 / 256 / (len(full) / 900))
    assert got[col].mean() > np.median(got, axis=0).mean() + 10


def test_drawing_a_long_alarm_clip_takes_little_memory():
    # the 40 s clip of an alarm: the whole complex STFT and float colour planes took about 40 MB at
    # the evidence writer's peak, beside the scoring of the next windows
    code = """
import io, resource, sys
import numpy as np
from edge_agent.alarms.evidence import render_png
x = (0.1 * np.random.default_rng(0).standard_normal(16000 * 40)).astype(np.float32)
scores = [(t, 0.1) for t in range(2, 40)]
render_png(io.BytesIO(), x[:16000], 16000, 1.0, scores[:2], 0.12)  # imports, Pillow's first image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
render_png(io.BytesIO(), x, 16000, 14.0, scores, 0.12)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 12, f"drawing raised the peak by {float(r.stdout):.1f} MB"


def test_a_disk_that_refuses_evidence_costs_the_evidence_not_the_alarm(calibrated, tmp_path):
    state = tmp_path / "st"
    state.mkdir()
    (state / "machines").symlink_to(calibrated / "machines")
    (state / "evidence").write_text("a file where the evidence folder should be")  # every write fails, even as root
    t = time.monotonic()
    r = cli("run", "--config", _config(tmp_path / "c.yaml", state))
    assert r.returncode == 0, r.stderr
    assert "ALARM START" in r.stdout and "ALARM END" in r.stdout
    assert "cannot write the evidence of alarm" in r.stderr
    # the write fails 10 s into the 23 s alarm: its end no longer points at files that do not exist
    end = next(ln for ln in r.stdout.splitlines() if "ALARM END" in ln)
    assert "evidence not written:" in end
    assert time.monotonic() - t < 120


def test_names_are_kept_only_while_the_alarm_lasts(tmp_path):
    from edge_agent.alarms.evidence import EvidenceRecorder
    from edge_agent.config import EvidenceConfig

    rec = EvidenceRecorder(EvidenceConfig(post_seconds=0), tmp_path, 100, 2.0)
    rec.window("m", np.ones(200, np.float32), 2.0)
    files = rec.alarm_started("m", "a1", 1.5, 0.5)
    assert rec.files_of("a1") == files and files["wav"].endswith("evidence/m/a1.wav")
    rec.forget("a1")
    rec.close()
    assert rec.files_of("a1") is None and rec.written == 1
    x, sr = read_wav(files["wav"])
    assert sr == 100 and len(x) == 150  # from the window's start (all it holds) to the alarm's start
    # a write that fails marks the alarm's names while it lasts, and nothing once it has ended
    (tmp_path / "evidence" / "m").rename(tmp_path / "moved")
    (tmp_path / "evidence" / "m").write_text("a file where the machine's folder should be")
    rec.window("m", np.ones(200, np.float32), 4.0)
    rec.alarm_started("m", "a2", 3.5, 0.5)
    rec.close()
    assert rec.files_of("a2")["error"].startswith("not written:") and rec.failed == 1
    rec.forget("a2")
    assert rec.files_of("a2") is None and rec.by_alarm == {}


def test_a_queued_alarm_holds_its_own_16_bit_samples(tmp_path):
    """While the writer is behind (a dozen alarms in a fast replay), each queued alarm holds the
    samples its WAV gets, 2 bytes each, not a float view of the history's buffer."""
    import threading

    from edge_agent.alarms.evidence import EvidenceRecorder
    from edge_agent.config import EvidenceConfig

    rec = EvidenceRecorder(EvidenceConfig(pre_seconds=1.0, post_seconds=0), tmp_path, 100, 2.0)
    rec._thread = threading.Thread(target=lambda: None)  # a writer that has not taken the job yet
    for k in range(6):
        rec.window("m", np.full(200, 0.25, np.float32), 2.0 + k)
    rec.alarm_started("m", "a1", 6.5, 0.5)
    job = rec._queue.get_nowait()
    pcm = job[1]
    assert pcm.dtype == np.int16 and pcm.base is None and pcm.flags.owndata
    assert len(pcm) == 100 and np.all(pcm == 0.25 * 32768)  # the pre-roll, 1 s


@pytest.mark.parametrize("wait", [True, False])
def test_a_replay_waits_for_the_writer_instead_of_dropping_evidence(tmp_path, monkeypatch, wait):
    """More alarms than the writer's queue holds, faster than it writes them (a fast replay of an
    alarming machine, or many machines alarming at once): a replay waits and every alarm gets its
    evidence; a live input never waits, and drops what does not fit."""
    import threading
    import time

    from edge_agent.alarms import evidence
    from edge_agent.alarms.evidence import EvidenceRecorder
    from edge_agent.config import EvidenceConfig

    held = threading.Event()

    def slow_png(out, *a, **k):
        if wait:
            time.sleep(0.05)
        else:
            held.wait(30)  # the writer is stuck on its first alarm until every alarm is in
        out.write(b"png")

    monkeypatch.setattr(evidence, "render_png", slow_png)
    rec = EvidenceRecorder(EvidenceConfig(pre_seconds=1.0, post_seconds=0), tmp_path, 100, 2.0, wait_when_full=wait)
    n = EvidenceRecorder.QUEUE + 8
    for k in range(n):
        rec.window("m", np.full(200, 0.1, np.float32), 2.0 + k)
        rec.alarm_started("m", f"a{k}", 1.5 + k, 0.5)
    held.set()
    rec.close(timeout=30)
    if wait:
        assert (rec.written, rec.failed) == (n, 0)
        assert len(list((tmp_path / "evidence" / "m").glob("*.wav"))) == n
    else:
        assert rec.written + rec.failed == n and rec.failed >= n - EvidenceRecorder.QUEUE - 1


def test_the_writer_outlives_a_failure_outside_writing_a_file(tmp_path, monkeypatch):
    """A replay waits for the writer; were its thread to die (here: pruning the folder fails with
    an error other than a disk error), every later alarm would wait out the timeout and lose its
    evidence. The writer logs the failure and goes on."""
    from edge_agent.alarms import evidence
    from edge_agent.alarms.evidence import EvidenceRecorder
    from edge_agent.config import EvidenceConfig

    def broken_budget(root, max_bytes):
        raise ValueError("a bug in pruning")

    monkeypatch.setattr(evidence, "enforce_budget", broken_budget)
    monkeypatch.setattr(EvidenceRecorder, "WAIT_SECONDS", 2.0)
    rec = EvidenceRecorder(EvidenceConfig(pre_seconds=1.0, post_seconds=0), tmp_path, 100, 2.0, wait_when_full=True)
    n = EvidenceRecorder.QUEUE_WAITING + 4
    for k in range(n):
        rec.window("m", np.full(200, 0.1, np.float32), 2.0 + k)
        rec.alarm_started("m", f"a{k}", 1.5 + k, 0.5)
    assert rec._thread.is_alive()
    rec.close(timeout=30)
    assert (rec.written, rec.failed) == (n, 0)


def test_stop_with_a_stuck_writer_takes_its_timeout_in_all(tmp_path, monkeypatch, caplog):
    """A replay's writer hangs on its first alarm (a dead disk), its queue is full and two more
    alarms wait for their post-roll: stopping gives up after ``timeout`` in all (it used to wait a
    queue timeout per waiting alarm, then ``timeout`` for the end marker and ``timeout`` again for
    the thread) and says how many alarms lost their evidence."""
    import threading
    import time

    from edge_agent.alarms import evidence
    from edge_agent.alarms.evidence import EvidenceRecorder
    from edge_agent.config import EvidenceConfig

    held = threading.Event()
    monkeypatch.setattr(evidence, "render_png", lambda out, *a, **k: held.wait(60))
    monkeypatch.setattr(EvidenceRecorder, "QUEUE_WAITING", 1)
    monkeypatch.setattr(EvidenceRecorder, "WAIT_SECONDS", 2.0)
    rec = EvidenceRecorder(EvidenceConfig(pre_seconds=1.0, post_seconds=5.0), tmp_path, 100, 2.0, wait_when_full=True)
    for k in range(4):
        rec.window("m", np.full(200, 0.1, np.float32), 2.0 + k)
        rec.alarm_started("m", f"a{k}", 0.5 + k, 0.5)
    rec.window("m", np.full(200, 0.1, np.float32), 6.0)  # a0 complete: the writer takes it and hangs
    rec.window("m", np.full(200, 0.1, np.float32), 7.0)  # a1 complete: queued, the queue is full
    assert len(rec.pending) == 2
    t = time.monotonic()
    try:
        with caplog.at_level("ERROR", logger="edge_agent.alarms.evidence"):
            rec.close(timeout=2.0)
        took = time.monotonic() - t
    finally:
        held.set()
    assert took < 4.0  # 8 s or more before
    assert "the writer did not finish in 2 s; 2 alarm(s) unwritten" in caplog.text
    assert rec.failed == 2 and rec.written == 0  # the two that found the queue full
