"""Pure parts of the runtime: ring buffer, windower, detector, k-NN and bank storage."""

import os
from pathlib import Path

import numpy as np
import pytest

from edge_agent.audio.ringbuffer import RingBuffer
from edge_agent.audio.windows import Windower
from edge_agent.scoring.bank import BankError, MemoryBank, combine_domains, knn_distance
from edge_agent.scoring.detector import Detector


def test_ringbuffer_order_wrap_and_overrun():
    rb = RingBuffer(10, 1)
    k = 1 / 32768  # the ring holds 16-bit samples and gives float32 k / 32768
    rb.write(np.arange(6, dtype=np.int16)[:, None])
    assert rb.read(4)[:, 0].tolist() == [0, k, 2 * k, 3 * k]
    rb.write(np.arange(6, 12, dtype=np.int16)[:, None])  # wraps
    assert (rb.read()[:, 0] * 32768).tolist() == [4, 5, 6, 7, 8, 9, 10, 11]
    rb.write(np.arange(100, 125, dtype=np.int16)[:, None])  # more than the capacity: the oldest are lost
    out = rb.read()[:, 0] * 32768
    assert out.tolist() == list(range(115, 125))
    assert rb.overruns == 1 and rb.frames_lost == 15
    assert rb.read().shape == (0, 1) and rb.read().dtype == np.float32


def test_ringbuffer_stores_floats_as_16_bit_and_counts_non_finite_samples():
    rb = RingBuffer(16, 2)
    pcm = np.array([[-32768, 32767], [-1, 1], [12345, 0]], np.int16)
    rb.write(pcm.astype(np.float32) / 32768)  # what a float reader of 16-bit audio gives comes back exactly
    got = rb.read()
    assert got.dtype == np.float32 and np.array_equal(got * 32768, pcm)
    rb.write(np.array([[2.0, -3.0], [np.nan, np.inf], [0.25, -np.inf]], np.float32))
    assert (rb.read() * 32768).tolist() == [[32767, -32768], [0, 0], [8192, 0]]  # clipped; NaN/Inf silence
    assert rb.nonfinite == 3 and rb._buf.dtype == np.int16
    assert rb.take_nonfinite() == 3 and rb.take_nonfinite() == 0  # each told once


def test_a_replay_reads_16_bit_files_as_it_plays_and_delivers_their_samples_exactly(tmp_path):
    """A 16-bit file of the stream's format is read a block at a time (an hour would otherwise be
    115 MB), and its samples reach the stream bit for bit; a float file is read whole and stored
    16-bit, within one step of 1/32768."""
    import time
    import tracemalloc

    from scipy.io import wavfile

    from edge_agent.audio.replay import ReplaySource
    from edge_agent.audio.wavio import pcm16_blocks, write_wav

    sr = 16000
    x = (np.random.default_rng(0).standard_normal((60 * sr, 1)) * 3000).astype(np.int16)
    write_wav(tmp_path / "a.wav", x, sr)
    blocks = pcm16_blocks(tmp_path / "a.wav", 1600, sr, 1)
    tracemalloc.start()
    first = next(blocks)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert first.dtype == np.int16 and first.shape == (1600, 1) and peak < 64_000  # the file is 1.9 MB
    assert np.array_equal(np.concatenate([first, *blocks]), x)
    assert pcm16_blocks(tmp_path / "a.wav", 1600, 44100, 1) is None  # another format: read whole

    y = np.clip(x[: 5 * sr].astype(np.float32) / 32768 + 1e-5, -1, 1)
    wavfile.write(tmp_path / "b.wav", sr, y)
    for f, want, tol in ((tmp_path / "a.wav", x / 32768, 0), (tmp_path / "b.wav", y, 1 / 32768)):
        src = ReplaySource("m", f, realtime=False)
        src.start()
        got, deadline = [], time.monotonic() + 60
        while not (src.finished and not src.ring.available()) and time.monotonic() < deadline:
            src.ring.wait(0.05)
            got.append(src.ring.read())
        src.stop()
        got = np.concatenate(got)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() <= tol


def test_windower_hops_across_pushes():
    w = Windower(window_seconds=1.0, hop_seconds=0.5, sample_rate=10, channels=1)
    x = np.arange(25, dtype=np.float32)[:, None]
    got = w.push(x[:7]) + w.push(x[7:18]) + w.push(x[18:])
    assert [int(win[0, 0]) for win, _ in got] == [0, 5, 10, 15]
    assert [end for _, end in got] == [10, 15, 20, 25]
    assert w.frames_needed() == 5  # the next window needs one more hop
    assert Windower(1.0, 0.5, 10, 1).frames_needed() == 10  # the first one a whole window


def test_a_live_agent_sleeps_until_a_window_can_be_complete(tmp_path):
    """The loop's idle wait follows the audio still to come (agent.idle_seconds): live streams up to
    IDLE_MAX_SECONDS, never below POLL_SECONDS, and a replay fed as fast as possible is polled."""
    from edge_agent.audio.wavio import write_wav
    from edge_agent.config import parse_config
    from edge_agent.runtime.agent import IDLE_MAX_SECONDS, POLL_SECONDS, Agent
    from edge_agent.runtime.daemon import agent_from_config

    sr = 16000
    write_wav(tmp_path / "a.wav", 0.1 * np.sin(np.arange(5 * sr) * 0.05).astype(np.float32), sr)

    def agent(realtime: bool) -> Agent:
        inp = {"file": str(tmp_path / "a.wav"), "realtime": realtime}
        cfg = parse_config({"state_dir": str(tmp_path), "engine": "cpu", "machines": {"m": {"input": inp}}})
        return agent_from_config(cfg, [])

    live = agent(True)
    s = live.streams["m"]
    assert s.seconds_to_next_window() == 2.0  # nothing has arrived: a whole 2 s window
    assert live.idle_seconds() == IDLE_MAX_SECONDS
    s.source.ring.write(np.zeros((int(1.9 * sr), 1), np.float32))
    assert s.seconds_to_next_window() == pytest.approx(0.1)
    assert live.idle_seconds() == pytest.approx(0.1)
    s.source.ring.write(np.zeros((int(0.1 * sr) - 10, 1), np.float32))
    assert live.idle_seconds() == POLL_SECONDS  # 10 frames to go: never a busy loop
    assert len(s.pump()) == 0 and s.seconds_to_next_window() == pytest.approx(10 / sr)
    s.source.ring.write(np.zeros((10, 1), np.float32))
    assert len(s.pump()) == 1 and s.seconds_to_next_window() == 1.0  # then one hop per window
    assert agent(False).idle_seconds() == POLL_SECONDS


def test_a_command_wakes_the_agents_loop():
    import time

    from edge_agent.runtime.commands import CommandDesk

    desk = CommandDesk()
    desk.submit("m", b'{"command": "ack"}', "test", lambda r: None)
    t = time.monotonic()
    desk.idle(30.0)  # the loop's idle wait ends at once: a command is waiting
    assert time.monotonic() - t < 5.0


def test_detector_k_of_n_and_hysteresis():
    d = Detector(threshold=1.0, raise_after=3, of_last=5, clear_after=2, update_seconds=1e9)
    seq = [0, 2, 0, 2, 0, 0, 2, 2, 0, 2, 0.5, 3, 0, 0]
    events = [(i, e.kind) for i, s in enumerate(seq) if (e := d.update(s, float(i))) is not None]
    # above at 1, 3, 6, 7: window 7 is the first whose last five (3..7) hold three above
    assert events[0] == (7, "start")
    assert events[1] == (13, "end")
    assert d.state == "normal"


def test_detector_update_events_and_forced_end():
    d = Detector(threshold=0.5, raise_after=1, of_last=1, clear_after=3, update_seconds=10)
    assert d.update(1.0, 0.0).kind == "start"
    assert d.update(0.9, 5.0) is None
    u = d.update(2.0, 11.0)
    assert u.kind == "update" and u.peak_score == 2.0
    e = d.end(12.0, 0.1, "end of recording")
    assert e.kind == "end" and e.reason == "end of recording" and e.alarm_id == u.alarm_id
    assert d.end(13.0, 0.1, "again") is None


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_knn_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    q, e = _unit(rng.normal(size=(7, 16))), _unit(rng.normal(size=(50, 16)))
    brute = np.array([[1 - qi @ ej for ej in e] for qi in q])
    np.testing.assert_allclose(knn_distance(q, e, 1), brute.min(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(knn_distance(q, e, 3), np.sort(brute, 1)[:, :3].mean(1), rtol=1e-5, atol=1e-6)


def test_domain_normalisation_takes_the_smaller_z():
    z = combine_domains(
        {"source": np.array([0.2, 0.5]), "target": np.array([0.4, 0.4])}, {"source": (0.2, 0.1), "target": (0.5, 0.1)}
    )
    np.testing.assert_allclose(z, [-1.0, -1.0])


def test_bank_round_trip_and_model_check(tmp_path):
    rng = np.random.default_rng(1)
    b = MemoryBank(
        _unit(rng.normal(size=(5, 8))),
        np.array(["source"] * 3 + ["target"] * 2),
        np.array(["centre"] * 3 + ["sample"] * 2),
        "a" * 64,
        "m",
        "1",
        threshold=0.3,
        meta={"version": 2},
        enrolled={"source": (_unit(rng.normal(size=(4, 8))), np.array(["c1", "c1", "c2", "c2"]))},
    )
    p = tmp_path / "machines" / "fan01" / "bank.npz"
    b.save(p)
    assert not [f for f in p.parent.iterdir() if f.name.startswith(".bank-")]  # no temp files left
    r = MemoryBank.load(p)
    np.testing.assert_array_equal(r.embeddings, b.embeddings)
    assert r.threshold == 0.3 and r.version == 2 and r.counts()["target_sample"] == 2
    assert r.enrolled["source"][1].tolist() == ["c1", "c1", "c2", "c2"]
    r.check_model("a" * 64)
    with pytest.raises(BankError, match="recalibrate"):
        r.check_model("b" * 64)
    p.write_bytes(b"not a zip")
    with pytest.raises(BankError, match="unreadable"):
        MemoryBank.load(p)


def test_a_machine_stream_owns_its_state_changes(tmp_path):
    """Liveness, skipped windows, a reloaded config and the stats snapshot go through the stream's own
    methods (the agent and health only call them), on a real replay of a real WAV."""
    from edge_agent.audio.replay import ReplaySource
    from edge_agent.audio.wavio import write_wav
    from edge_agent.config import MachineConfig
    from edge_agent.model.bundle import Bundle
    from edge_agent.runtime.stream import MachineStream

    sr = 16000
    write_wav(tmp_path / "a.wav", 0.1 * np.sin(np.arange(5 * sr) * 0.05).astype(np.float32), sr)
    cfg = MachineConfig.model_validate({"input": {"file": str(tmp_path / "a.wav"), "realtime": False}})
    src = ReplaySource("m", tmp_path / "a.wav", realtime=False)
    s = MachineStream("m", cfg, src, Bundle.load("default").frontend, None)
    s.started()
    assert s.update_liveness(s.last_frames_at + cfg.input.silence_seconds + 1)  # nothing came: no_audio
    assert s.state == "no_audio" and "no audio frames" in s.reason
    assert not s.update_liveness(s.last_frames_at + cfg.input.silence_seconds + 2)  # said once
    src.start()
    windows = []
    while not s.drained:
        windows += s.pump()
    src.stop()
    assert s.update_liveness() and s.state == "uncalibrated"  # frames came back
    for w in windows:
        assert not s.calibrated and s.gate(w)
        s.skip(w)
    st = s.stats()
    assert (st.windows_processed, st.frames_written, st.finished) == (len(windows), 5 * sr, True)
    assert st.state == "uncalibrated" and st.threshold is None and st.last_level_dbfs is not None
    s.apply_config(cfg.model_copy(update={"hop_seconds": 0.5}))
    assert s.windower is None and s.cfg.hop_seconds == 0.5  # rebuilt with the new hop at the next pump


def test_the_running_agent_does_not_load_scipys_statistics(tmp_path):
    """``run`` wires the learning period (calibration.learning) and reads each machine's threshold
    policy; neither may pull in the threshold fitting code (scipy.stats, about 50 MB of RSS)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from edge_agent.cli.run import cmd_run\n"
        "from calibration.learning import learner_factory\n"
        "from calibration.policy import threshold_policy\n"
        "from edge_agent.config import parse_config\n"
        "learner_factory(parse_config({'state_dir': sys.argv[1]}), None)\n"
        "p = threshold_policy(None, None, 1.0)\n"
        "assert p.false_alarms_per_day == 1 / 7, p\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('scipy.stats', 'sklearn', 'torch')))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_16_bit_wavs_are_read_and_written_without_scipy_io(tmp_path):
    """A replay reads and the evidence writer writes 16-bit PCM through the standard library's
    ``wave`` (scipy.io and the scipy.sparse it loads are about 4 MB of the agent); the samples equal
    scipy's reading, and what ``wave`` cannot read (float, 24-bit, a file cut short) still goes
    through scipy, with its truncation warning."""
    import subprocess
    import sys

    from scipy.io import wavfile

    from edge_agent.audio.wavio import read_wav, write_wav

    demo = sorted((Path(__file__).resolve().parent.parent / "edge_agent" / "demo_clips" / "replay").glob("*.wav"))[0]
    code = (
        "import sys\n"
        "from edge_agent.audio.wavio import read_wav, write_wav\n"
        "x, sr = read_wav(sys.argv[1])\n"
        "write_wav(sys.argv[2], x, sr)\n"
        "assert 'scipy.io' not in sys.modules, sorted(m for m in sys.modules if m.startswith('scipy'))\n"
    )
    out = tmp_path / "copy.wav"
    r = subprocess.run([sys.executable, "-c", code, str(demo), str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sr, ref = wavfile.read(demo)
    x, sr2 = read_wav(demo)
    assert sr2 == sr and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], ref.astype(np.float32) / 32768.0)
    assert wavfile.read(out)[1].tolist() == ref.tolist()  # written back sample for sample
    stereo = np.stack([ref[:1000], -ref[:1000]], axis=1)
    write_wav(tmp_path / "stereo.wav", stereo.astype(np.float32) / 32768.0, sr)
    assert np.array_equal(wavfile.read(tmp_path / "stereo.wav")[1], stereo)
    loud = np.array([-32768, -32767, -20000, 16385, 20000, 32767], np.int16)  # full scale too
    write_wav(tmp_path / "loud.wav", loud.astype(np.float32) / 32768.0, sr)
    assert wavfile.read(tmp_path / "loud.wav")[1].tolist() == loud.tolist()
    wavfile.write(tmp_path / "float.wav", sr, ref.astype(np.float32) / 32768.0)
    np.testing.assert_array_equal(read_wav(tmp_path / "float.wav")[0], x)
    b = demo.read_bytes()
    (tmp_path / "cut.wav").write_bytes(b[: len(b) // 2 + 1])  # half the data and an odd byte
    cut, _ = read_wav(tmp_path / "cut.wav")
    assert 0 < len(cut) < len(x) and np.array_equal(cut, x[: len(cut)])


def test_metadata_chunks_are_skipped_without_a_warning(tmp_path, caplog):
    """Float WAVs from libsndfile, sox or an editor carry chunks scipy does not parse (PEAK, LIST):
    the audio is whole, so they are no reason to warn on every clip enrolled or replayed."""
    import logging

    from scipy.io import wavfile

    from edge_agent.audio.wavio import read_wav

    x = (0.1 * np.sin(np.arange(16000) / 7.0)).astype(np.float32)
    wavfile.write(tmp_path / "plain.wav", 16000, x)
    b = (tmp_path / "plain.wav").read_bytes()
    fmt_end = 12 + 8 + int.from_bytes(b[16:20], "little")
    peak = b"PEAK" + (16).to_bytes(4, "little") + bytes(16)
    body = b[12:fmt_end] + peak + b[fmt_end:]
    (tmp_path / "peak.wav").write_bytes(b"RIFF" + (4 + len(body)).to_bytes(4, "little") + b"WAVE" + body)
    with caplog.at_level(logging.DEBUG, logger="edge_agent.wav"):
        y, sr = read_wav(tmp_path / "peak.wav")
    assert sr == 16000 and np.array_equal(y[:, 0], x)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] and "not understood" in caplog.text


def test_freed_memory_is_given_back_on_glibc():
    import platform

    from edge_agent.runtime.heap import trim

    assert trim() is (platform.libc_ver()[0] == "glibc")


FRAGMENT = """
import sys, numpy as np
from edge_agent.runtime.heap import fix_mmap_threshold
def rss():
    status = open('/proc/self/status').read().splitlines()
    return int(next(l for l in status if l.startswith('VmRSS')).split()[1]) // 1024
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
a = np.ones(200_000); del a  # a freed mapped block: glibc raises its threshold unless it is fixed
big, small = [], []
for i in range(300):  # a window's arrays, with small long-lived blocks allocated between them
    big.append(np.ones(30_000))
    small.append(bytearray(2000))
before = rss()
big.clear()
print(before - rss())
"""


def test_a_fixed_mmap_threshold_gives_large_arrays_back_when_freed():
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")

    def released(mode: str) -> int:
        r = subprocess.run([sys.executable, "-c", FRAGMENT, mode], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return int(r.stdout)

    assert released("fixed") > 50  # of 72 MB freed
    assert released("dynamic") < 20  # pinned in the heap by the small blocks between them


def test_a_running_agent_keeps_numpys_blas_on_one_thread():
    """OpenBLAS's worker threads busy-wait after every product: a window's k-NN against a bank of
    1,000 entries cost 96 ms of CPU for 1.4 ms of work. ``run`` limits BLAS to the calling thread."""
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from threadpoolctl import threadpool_info\n"
        "from edge_agent.model.blas import single_thread_blas\n"
        "had = single_thread_blas()\n"
        "blas = [i for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "assert blas and all(i['num_threads'] == 1 for i in blas), blas\n"
        "print(had)\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}  # a pool to limit, on any machine
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == 2 and "numpy's BLAS runs on the calling thread (it had 2)" in r.stderr
    # `run` calls it: tests/test_evidence.py finds the line in a real run's log


def test_console_prints_the_threshold_in_force(tmp_path):
    """run --scores shows the threshold the detector uses: the calibrated one times the operator's scale."""
    import io

    from edge_agent.alarms.lifecycle import Lifecycle
    from edge_agent.config import parse_config
    from edge_agent.model.bundle import Bundle
    from edge_agent.publish.sinks import ConsoleSink
    from edge_agent.runtime.stream import MachineStream
    from edge_agent.runtime.stream_records import Window
    from edge_agent.scoring.bank import MemoryBank

    bundle = Bundle.load("default")
    bank = MemoryBank(np.ones((2, 4), np.float32), np.array(["source"] * 2), np.array(["x"] * 2), "sha", threshold=0.2)
    cfg = parse_config({"machines": {"m": {}}}).machines["m"]
    s = MachineStream("m", cfg, None, bundle.frontend, bank, lifecycle=Lifecycle())
    s.scale_threshold(2.0)
    out = io.StringIO()
    ConsoleSink(out, scores=True).window(s.event(Window(s, np.zeros(4, np.float32), 0.0, 2.0, -20.0), 0.3, None))
    assert "score 0.3000 <= threshold 0.4000" in out.getvalue()


def test_bank_metadata_is_a_checked_contract(tmp_path, calibrated):
    """A bank written by this version loads; one with an unknown key or a value of the wrong type
    (another version's, or edited by hand) is refused at load with what to do, and never written."""
    import io
    import json
    import zipfile

    from edge_agent.scoring.bank import bank_path

    good = MemoryBank.load(bank_path(calibrated, "fan01"))
    assert good.meta["levels_dbfs"]["windows"] > 0 and good.threshold > 0

    def rewritten(**changes) -> Path:
        p = tmp_path / f"bank{len(list(tmp_path.iterdir()))}.npz"
        with zipfile.ZipFile(bank_path(calibrated, "fan01")) as src, zipfile.ZipFile(p, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename == "meta.npy":
                    with src.open(item) as f:
                        meta = json.loads(str(np.load(f)))
                    meta.update(changes)
                    buf = io.BytesIO()
                    np.save(buf, np.array(json.dumps(meta)))
                    data = buf.getvalue()
                dst.writestr(item, data)
        return p

    with pytest.raises(BankError, match=r"colour: unknown key.*recalibrate the machine"):
        MemoryBank.load(rewritten(colour="blue"))
    with pytest.raises(BankError, match=r"levels_dbfs.low: Input should be a valid number"):
        MemoryBank.load(rewritten(levels_dbfs={"low": "loud", "median": -30, "high": -20, "windows": 9}))
    good.meta["colour"] = "blue"
    with pytest.raises(ValueError, match="colour: unknown key"):
        good.save(tmp_path / "never.npz")
    assert not (tmp_path / "never.npz").exists()
