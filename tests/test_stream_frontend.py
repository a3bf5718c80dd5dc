"""The per-stream front end computes each frame once and still gives the batch front end's features."""

import numpy as np
import pytest

from edge_agent.audio.convert import prepare
from edge_agent.audio.wavio import read_wav
from edge_agent.model.frontend import FeatureSpec, Frontend
from edge_agent.model.stream_frontend import StreamFrontend, frame_count, stack_features
from tests.conftest import DEMO

SR, N = 16000, 32000

FRONTENDS = {
    # the four-seed ensemble's: whole-window spectrum (not framed) + STFT hop 512
    "ensemble": Frontend(
        SR, N, (FeatureSpec("spectrum", "spectrum"), FeatureSpec("spectrogram", "stft", mean_removed=True))
    ),
    # the first fast model's: 1 s spectrum pieces + STFT hop 500 (1/32 s)
    "distilled-stft": Frontend(
        SR,
        N,
        (
            FeatureSpec("spectrum", "spectrum", segment=16000),
            FeatureSpec("spectrogram", "stft", hop=500, mean_removed=True),
        ),
    ),
    # the fast model's: 1 s spectrum pieces + 64 log-mel bands at hop 500
    "distilled": Frontend(
        SR,
        N,
        (
            FeatureSpec("spectrum", "spectrum", segment=16000),
            FeatureSpec("spectrogram", "logmel", hop=500, n_mels=64, mean_removed=True),
        ),
    ),
    "logmel": Frontend(
        SR, N, (FeatureSpec("m", "logmel", hop=250, n_mels=64, mean_removed=True), FeatureSpec("w", "waveform"))
    ),
    "log-pieces": Frontend(SR, N, (FeatureSpec("s", "spectrum", segment=8000, compress="log"),)),
}


@pytest.fixture(scope="module")
def audio():
    """About 30 s of real machine sound (the demo's replay clips, one after another)."""
    parts = []
    for p in sorted((DEMO / "replay").glob("*.wav")):
        x, sr = read_wav(p)
        parts.append(prepare(x, sr, SR))
    return np.concatenate(parts)


def run_stream(fe: Frontend, x: np.ndarray, starts) -> tuple[StreamFrontend, list[dict]]:
    sf = StreamFrontend(fe)
    return sf, [sf(x[s : s + N], s) for s in starts]


LOG_COMPRESSED = {f.name for fe in FRONTENDS.values() for f in fe.features if f.compress == "log"}


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].shape == want[k].shape and got[k].dtype == np.float32
        g, w = got[k], want[k]
        if k in LOG_COMPRESSED:
            # a log of a magnitude: float32 FFTs of one piece and of a batch of pieces round apart
            # (ducc0 vectorises across transforms) by ~1e-7 of the largest magnitude, which the log
            # magnifies in the quietest bins; compare the magnitudes
            g, w = np.exp(g.astype(np.float64)), np.exp(w.astype(np.float64))
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-6 * scale, err_msg=k)


@pytest.mark.parametrize("name", list(FRONTENDS))
@pytest.mark.parametrize("hop", [16000, 8000, 4000])
def test_features_equal_the_batch_front_end_and_frames_are_reused(audio, name, hop):
    fe = FRONTENDS[name]
    starts = list(range(0, len(audio) - N + 1, hop))
    sf, got = run_stream(fe, audio, starts)
    want = fe(np.stack([audio[s : s + N] for s in starts]))
    assert_same(stack_features(got), want)
    framed = [f for f in fe.features if f.frame_hop]
    if framed and all(hop % f.frame_hop == 0 for f in framed):
        # the first window computes all its frames, every later one only those of its new audio
        first = sum(frame_count(f, N) for f in framed)
        assert sf.frames_computed == first + (len(starts) - 1) * sum(hop // f.frame_hop for f in framed)
        assert sf.frames_reused > 0


def test_the_ensembles_stft_frames_are_not_shared_at_a_hop_of_1_s(audio):
    """16000 samples is not a multiple of 512: the frames of consecutive windows do not line up, so
    nothing may be reused (and the features are still right)."""
    fe = FRONTENDS["ensemble"]
    sf, got = run_stream(fe, audio, range(0, 5 * 16000, 16000))
    assert sf.frames_reused == 0
    assert_same(stack_features(got), fe(np.stack([audio[s : s + N] for s in range(0, 5 * 16000, 16000)])))


def test_a_gap_or_changed_audio_recomputes_everything(audio):
    fe = FRONTENDS["distilled"]
    sf = StreamFrontend(fe)
    sf(audio[:N], 0)
    # the next window claims to start 1 s later but its audio is not what the previous window held
    other = audio[5 * SR : 5 * SR + N]
    before = sf.frames_reused
    assert_same(sf(other, 16000), fe(other[None]))
    assert sf.frames_reused == before
    # an unknown start (a window resampled on its own) is never matched
    assert_same(sf(audio[16000 : 16000 + N], None), fe(audio[None, 16000 : 16000 + N]))
    assert sf.frames_reused == before
    # and after a reset the cache is empty
    sf.reset()
    assert_same(sf(audio[32000 : 32000 + N], 32000), fe(audio[None, 32000 : 32000 + N]))
    assert sf.frames_reused == before


def test_a_replayed_stream_gives_its_windows_their_start(tmp_path):
    """Through a real replay of a real WAV: windows know where they start, and the stream's front end
    reuses frames for the distilled model's features at hop 1 s."""
    from edge_agent.audio.replay import ReplaySource
    from edge_agent.config import MachineConfig
    from edge_agent.runtime.stream import MachineStream

    clip = sorted((DEMO / "replay").glob("*.wav"))[0]
    cfg = MachineConfig.model_validate({"input": {"file": str(clip), "realtime": False}})
    src = ReplaySource("m", clip, realtime=False)
    s = MachineStream("m", cfg, src, FRONTENDS["distilled"], None)
    s.started()
    src.start()
    windows = []
    while not s.drained:
        windows += s.pump()
    src.stop()
    assert [w.start for w in windows] == [i * 16000 for i in range(len(windows))]
    feats = stack_features([w.features() for w in windows])
    x, sr = read_wav(clip)
    x = prepare(x, sr, SR)
    assert_same(feats, FRONTENDS["distilled"](np.stack([x[w.start : w.start + N] for w in windows])))
    assert s.features.frames_reused > s.features.frames_computed / 2


def test_an_stft_feature_computes_as_before_whatever_its_centre_flag(audio):
    """``centre`` only means something for log-mel; an STFT spec that sets it is still computed
    (frames then finish), as it was before features were split into frames."""
    spec = FeatureSpec("s", "stft", mean_removed=True, centre=True)
    plain = FeatureSpec("s", "stft", mean_removed=True)
    x = audio[None, :N]
    np.testing.assert_array_equal(spec.compute(x, SR), plain.compute(x, SR))
