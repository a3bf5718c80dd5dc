"""The numpy front end against references computed another way."""

import numpy as np
import pytest
from scipy import signal

from edge_agent.audio.convert import ChannelError, prepare, to_mono
from edge_agent.audio.wavio import read_wav
from edge_agent.audio.windows import frame_windows, framed
from edge_agent.model.frontend import (
    FeatureSpec,
    Frontend,
    hz_to_mel,
    log_mel,
    magnitude_spectrum,
    mean_over_frames,
    mel_filterbank,
    mel_to_hz,
    remove_temporal_mean,
    rfft,
    stft_magnitude,
)
from tests.conftest import DATA


@pytest.fixture(scope="module")
def clip():
    x, sr = read_wav(next((DATA / "valve" / "train").glob("*.wav")))
    return x[:, 0], sr


def test_spectrum_matches_direct_dft(clip):
    x = clip[0][:2048].astype(np.float64)
    n = np.arange(len(x))
    k = np.arange(len(x) // 2)
    direct = np.abs(np.exp(-2j * np.pi * np.outer(k, n) / len(x)) @ x)
    np.testing.assert_allclose(magnitude_spectrum(x.astype(np.float32)), direct, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(16000,), (1, 32000), (2, 16000), (3, 1, 8000), (61, 1024), (1, 5, 1023), (0, 512)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_rfft_equals_numpys_in_every_shape_and_precision(shape, dtype):
    # ducc0 is called one way for a single transform and another for a batch; both must agree
    x = (np.random.default_rng(1).standard_normal(shape) * 1000).astype(dtype)
    got, want = rfft(x), np.fft.rfft(x.astype(np.float64), axis=-1)
    assert got.shape == want.shape
    assert got.dtype == (np.complex64 if dtype == np.float32 else np.complex128)
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=(2e-6 if dtype == np.float32 else 1e-12) * scale)


@pytest.mark.parametrize(
    "shape, n_fft, hop", [((17000,), 1024, 500), ((3, 32000), 1024, 512), ((2, 2, 5000), 400, 160), ((1024,), 1024, 7)]
)
@pytest.mark.parametrize("layout", ["contiguous", "every other sample", "batch-major"])
def test_frames_are_numpys_sliding_windows(shape, n_fft, hop, layout):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    if layout == "every other sample":
        x = np.repeat(x, 2, axis=-1)[..., ::2]
    elif layout == "batch-major":
        x = np.asfortranarray(x)
    got = framed(x, n_fft, hop)
    want = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[..., ::hop, :]
    assert got.shape == want.shape and np.array_equal(got, want) and not got.flags.writeable


def test_stft_matches_scipy(clip):
    x = clip[0][:16000]
    ours = stft_magnitude(x, 1024, 512)
    _, _, z = signal.stft(x, nperseg=1024, noverlap=512, window="hann", boundary=None, padded=False, scaling="spectrum")
    ref = np.abs(z).T * signal.get_window("hann", 1024).sum()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-4)


def test_temporal_mean_removed():
    s = np.random.default_rng(0).random((3, 20, 9)).astype(np.float32)
    r = remove_temporal_mean(s)
    np.testing.assert_allclose(r.mean(axis=1), 0, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 8000), (5, 2, 8000), (31, 64), (4, 62, 64), (1, 9)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_mean_over_frames_is_numpys_bit_for_bit(shape, dtype):
    # features a model was trained on must not move by a rounding step
    s = (np.random.default_rng(3).standard_normal(shape) * 100).astype(dtype)
    assert np.array_equal(mean_over_frames(s), s.mean(axis=-2))
    assert np.array_equal(mean_over_frames(s, keepdims=True), s.mean(axis=-2, keepdims=True))


def test_mel_scale_roundtrip_and_filterbank_against_loop():
    f = np.array([0, 200, 999, 1000, 4000, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-9, atol=1e-9)
    sr, n_fft, n_mels = 16000, 512, 20
    fb = mel_filterbank(sr, n_fft, n_mels)
    # independent per-bin loop of the triangle definition
    edges = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(sr / 2), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    ref = np.zeros_like(fb)
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for i, fr in enumerate(freqs):
            if lo <= fr <= c:
                ref[i, m] = (fr - lo) / (c - lo)
            elif c < fr <= hi:
                ref[i, m] = (hi - fr) / (hi - c)
        ref[:, m] *= 2.0 / (hi - lo)
    np.testing.assert_allclose(fb, ref, rtol=1e-5, atol=1e-7)


def test_log_mel_peak_of_a_tone():
    sr = 16000
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    lm = log_mel(x, sr, 1024, 512, 64)
    centres = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(sr / 2), 66))[1:-1]
    assert abs(centres[lm.mean(0).argmax()] - 1000) < 120


def test_prepare_resamples_and_mixes():
    sr = 44100
    t = np.arange(sr) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], 1).astype(np.float32)
    y = prepare(stereo, sr, 16000, "mix")
    assert len(y) == 16000
    f = np.fft.rfftfreq(16000, 1 / 16000)[np.abs(np.fft.rfft(y)).argmax()]
    assert abs(f - 440) < 2
    assert np.allclose(np.abs(y).max(), 0.5, atol=0.02)  # the mean of a tone and silence
    assert np.abs(prepare(stereo, sr, 16000, 1)).max() == 0
    with pytest.raises(ChannelError, match="has 2 channels"):
        to_mono(stereo, 5)


def test_frontend_shapes_and_errors():
    fe = Frontend(
        16000,
        16000,
        (
            FeatureSpec("spectrum", "spectrum"),
            FeatureSpec("spec", "stft", n_fft=512, hop=256, mean_removed=True),
            FeatureSpec("mel", "logmel", n_fft=512, hop=256, n_mels=32),
        ),
    )
    out = fe(np.zeros((2, 16000), np.float32))
    assert out["spectrum"].shape == (2, 8000)
    assert out["spec"].shape == (2, *fe.features[1].shape(16000))
    assert out["mel"].shape == (2, 61, 32)
    assert Frontend.from_dict(fe.to_dict()) == fe
    with pytest.raises(ValueError, match="expects 16000"):
        fe(np.zeros((1, 100), np.float32))


def test_frame_windows_short_and_long():
    w = frame_windows(np.arange(10, dtype=np.float32), 4, 3)
    assert w.shape == (3, 4) and w[1, 0] == 3
    short = frame_windows(np.arange(3, dtype=np.float32), 8, 8)
    assert short.shape == (1, 8) and list(short[0, :4]) == [0, 1, 2, 0]


def test_centred_db_log_mel_matches_a_frame_loop(clip):
    """PANNs' extractor: reflect-padded centred frames, power mel, 10 log10 with a 1e-10 floor."""
    x = clip[0][:32000].astype(np.float64)
    n_fft, hop = 1024, 320
    pad = np.pad(x, n_fft // 2, mode="reflect")
    win = signal.get_window("hann", n_fft)
    fb = mel_filterbank(32000, n_fft, 64, 50.0, 14000.0).astype(np.float64)
    ref = np.stack(
        [
            10 * np.log10(np.maximum((np.abs(np.fft.rfft(pad[s : s + n_fft] * win)) ** 2) @ fb, 1e-10))
            for s in range(0, len(pad) - n_fft + 1, hop)
        ]
    )
    ours = FeatureSpec("m", "logmel", n_fft=n_fft, hop=hop, n_mels=64, fmin=50.0, fmax=14000.0, centre=True, db=True)
    got = ours.compute(x.astype(np.float32)[None], 32000)[0]
    assert got.shape == ref.shape == tuple(ours.shape(32000)) == (1 + 32000 // hop, 64)
    np.testing.assert_allclose(got, ref, atol=1e-2)


def test_kaldi_fbank_frames_tone_and_dc():
    from edge_agent.model.frontend import kaldi_fbank

    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    fb = kaldi_fbank(tone[None], sr, 128)[0]
    assert fb.shape == (1 + (sr - 400) // 160, 128) == tuple(FeatureSpec("f", "fbank").shape(sr, sr))
    # the loudest band is the one whose centre (Kaldi mel scale, 20 Hz .. Nyquist) is nearest 1 kHz
    mel = lambda f: 1127 * np.log1p(f / 700)  # noqa: E731
    centres = np.linspace(mel(20), mel(8000), 130)[1:-1]
    assert abs(int(np.argmax(fb.mean(axis=0))) - int(np.argmin(np.abs(centres - mel(1000))))) <= 1
    # each frame's DC offset is removed before anything else
    np.testing.assert_allclose(kaldi_fbank((tone + 0.1)[None], sr, 128)[0], fb, atol=1e-3)
    # digital silence sits at the float32 epsilon floor
    assert np.allclose(kaldi_fbank(np.zeros((1, sr), np.float32), sr, 128), np.log(np.finfo(np.float32).eps))
