"""The runtime's numpy front end against reference implementations (test-only dependencies): STFT,
mel filterbank and log-mel against librosa; the Kaldi fbank against kaldi-native-fbank (Kaldi's
feature code in C++). Real audio: a bundled fan clip."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.audio.wavio import read_wav
from edge_agent.model.frontend import kaldi_fbank, log_mel, mel_filterbank, stft_magnitude
from tests.conftest import DEMO

librosa = pytest.importorskip("librosa")


@pytest.fixture(scope="module")
def clip():
    x, sr = read_wav(DEMO / "replay" / "02_anomaly_id_00_00000002.wav")
    return x[: 2 * sr, 0].astype(np.float32), sr


def test_stft_magnitude_matches_librosa(clip):
    x, sr = clip
    ours = stft_magnitude(x, 1024, 512)
    ref = np.abs(librosa.stft(x, n_fft=1024, hop_length=512, window="hann", center=False)).T
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("n_fft,n_mels,fmin,fmax", [(1024, 128, 0.0, None), (1024, 64, 50.0, 14000.0)])
def test_mel_filterbank_matches_librosa_slaney(n_fft, n_mels, fmin, fmax):
    sr = 32000 if fmax else 16000
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney").T
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("centre,db", [(False, False), (True, True)])
def test_log_mel_matches_librosa(clip, centre, db):
    x, sr = clip
    ours = log_mel(x, sr, 1024, 512, 128, centre=centre, db=db)
    s = librosa.feature.melspectrogram(
        y=x,
        sr=sr,
        n_fft=1024,
        hop_length=512,
        n_mels=128,
        power=2.0,
        center=centre,
        pad_mode="reflect",
        htk=False,
        norm="slaney",
    ).T
    ref = librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=None) if db else np.log(s + 1e-8)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3 if db else 1e-3)


@pytest.mark.parametrize("n_mels", [23, 80])  # Kaldi itself refuses 128 bands at 16 kHz (empty filters)
def test_kaldi_fbank_matches_kaldi_native_fbank(clip, n_mels):
    knf = pytest.importorskip("kaldi_native_fbank")
    x, sr = clip
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sr
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = n_mels
    opts.use_energy = False
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(sr, (x * 32768.0).tolist())  # Kaldi works on 16-bit sample values
    fb.input_finished()
    ref = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    ours = kaldi_fbank(x * 32768.0, sr, n_mels=n_mels)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-3 * np.abs(ref).max())
