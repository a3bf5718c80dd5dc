"""Signal front end: the same numpy code turns audio into model inputs in training and at run time.

Pure functions for the math, and a ``Frontend`` that applies the feature list a model bundle's
manifest declares, so training and the runtime cannot drift apart. Every function takes a batch
(..., samples) and works on the last axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import ducc0
import numpy as np

from edge_agent.audio.windows import framed, n_frames

EPS = 1e-8


def rfft(x: np.ndarray) -> np.ndarray:
    """FFT of real input along the last axis, in its precision (float32 -> complex64): (..., N) ->
    (..., N // 2 + 1). ducc0 (pocketfft's successor) rather than scipy.fft: about 2x faster on a
    stream's single 16000- or 32000-point transform, as fast on batches of STFT frames, and 5 MB of
    imports against scipy.fft's 26 MB (measured, docs/performance.md); numpy.fft is slower still."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.size == 0 and x.shape[-1]:  # an empty batch, which ducc0 refuses
        return np.zeros((*x.shape[:-1], x.shape[-1] // 2 + 1), np.result_type(x.dtype, np.complex64))
    if x.size == x.shape[-1]:  # one transform (a stream's piece): ducc0 takes ~2x as long for it as a batch of one
        return ducc0.fft.r2c(x.reshape(-1), axes=(0,)).reshape(*x.shape[:-1], -1)
    return ducc0.fft.r2c(x, axes=(x.ndim - 1,))


def magnitude_spectrum(x: np.ndarray) -> np.ndarray:
    """|FFT| of the whole window: (..., N) -> (..., N // 2) (DC kept, Nyquist dropped)."""
    n = x.shape[-1]
    return np.abs(rfft(x))[..., : n // 2].astype(np.float32)


def segment_spectra(x: np.ndarray, segment: int) -> np.ndarray:
    """|FFT| of each non-overlapping ``segment``-sample piece: (..., N) -> (..., N // segment, segment // 2).
    Their mean is a Welch estimate (rectangular window) of the window's spectrum that a stream can
    compute once per piece instead of once per overlapping window."""
    n = x.shape[-1] // segment * segment
    if n == 0:
        raise ValueError(f"window of {x.shape[-1]} samples is shorter than a spectrum segment of {segment}")
    pieces = x[..., :n].reshape(*x.shape[:-1], n // segment, segment)
    return magnitude_spectrum(pieces)


@lru_cache(maxsize=16)
def _hann(n_fft: int) -> np.ndarray:
    # periodic Hann, as scipy.signal.get_window('hann', n) and torch.hann_window give
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def n_frames_centred(n_samples: int, hop: int) -> int:
    return 1 + n_samples // hop


def centre_pad(x: np.ndarray, n_fft: int) -> np.ndarray:
    """Reflect-pad n_fft // 2 samples on both sides, so frame t is centred on sample t * hop (as
    torch.stft(center=True) and librosa pad, which PANNs checkpoints were trained with)."""
    pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    return np.pad(x, pad, mode="reflect")


def stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Hann-windowed STFT magnitude without padding: (..., N) -> (..., frames, n_fft // 2 + 1)."""
    if x.shape[-1] < n_fft:
        raise ValueError(f"window of {x.shape[-1]} samples is shorter than n_fft={n_fft}")
    return np.abs(rfft(framed(x, n_fft, hop) * _hann(n_fft))).astype(np.float32, copy=False)


def mean_over_frames(s: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """``s.mean(axis=-2)``, bit for bit (the same float32 sum, divided by the count), without
    ``ndarray.mean``'s overhead: 7 against 19 us for a stream's two spectrum pieces (measured)."""
    return np.add.reduce(s, axis=-2, keepdims=keepdims) / s.shape[-2]


def remove_temporal_mean(s: np.ndarray) -> np.ndarray:
    """Subtract each frequency bin's mean over time: (..., frames, bins)."""
    return s - mean_over_frames(s, keepdims=True)


def hz_to_mel(f):
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, EPS) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular, area-normalised (Slaney) mel filters: (n_fft // 2 + 1, n_mels)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    bins_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins_hz[None, :] - lower) / (centre - lower)
    down = (upper - bins_hz[None, :]) / (upper - centre)
    w = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (upper - lower))
    return w.T.astype(np.float32)


def mel_power(power: np.ndarray, sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax=None):
    """Power spectra (..., bins) -> mel band powers (..., n_mels), as ``power @ mel_filterbank``.
    A dense product: for the 32 new frames a `fast` stream has per window (513 bins -> 64 bands) it
    costs about what scipy's sparse product did (23-60 against 34-45 us on one BLAS thread, noisy),
    without scipy.sparse's 36 MB of imports; at 128 bands the sparse product was 2x cheaper."""
    return power.astype(np.float32, copy=False) @ mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)


def log_mel(
    x: np.ndarray,
    sample_rate: int,
    n_fft: int,
    hop: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    centre: bool = False,
    db: bool = False,
) -> np.ndarray:
    """Log power mel spectrogram: (..., N) -> (..., frames, n_mels). ``db`` gives 10 log10 (PANNs'
    power_to_db with ref 1 and amin 1e-10) instead of the natural log."""
    if centre:
        x = centre_pad(x, n_fft)
    mel = mel_power(stft_magnitude(x, n_fft, hop) ** 2, sample_rate, n_fft, n_mels, fmin, fmax)
    if db:
        return 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.log(mel + EPS)


def kaldi_mel_banks(sample_rate: int, n_fft: int, n_mels: int, low: float = 20.0, high: float = 0.0) -> np.ndarray:
    """Kaldi's mel filters (mel = 1127 ln(1 + f / 700), triangles in the mel domain, unnormalised):
    (n_fft // 2 + 1, n_mels); the Nyquist bin gets no weight, as in Kaldi."""
    nyq = sample_rate / 2
    high = high if high > 0 else nyq + high
    mel = lambda f: 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)  # noqa: E731
    edges = np.linspace(mel(low), mel(high), n_mels + 2)
    bins = mel(np.arange(n_fft // 2) * sample_rate / n_fft)
    lo, c, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    w = np.maximum(0.0, np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)))
    return np.concatenate([w.T, np.zeros((1, n_mels))]).astype(np.float32)


def kaldi_fbank(
    x: np.ndarray, sample_rate: int, n_mels: int = 128, frame_ms: float = 25.0, shift_ms: float = 10.0
) -> np.ndarray:
    """Kaldi-compatible log mel filterbank (torchaudio.compliance.kaldi.fbank with dither 0,
    hanning window, snip_edges, DC removal, pre-emphasis 0.97, power, no energy): the input the
    Audio Spectrogram Transformer checkpoints were trained on. (..., N) -> (..., frames, n_mels)."""
    flen = int(sample_rate * frame_ms / 1000)
    fshift = int(sample_rate * shift_ms / 1000)
    n_fft = 1 << (flen - 1).bit_length()
    if x.shape[-1] < flen:
        raise ValueError(f"window of {x.shape[-1]} samples is shorter than a {frame_ms:g} ms frame")
    fr = framed(np.asarray(x, np.float64), flen, fshift)
    fr = fr - fr.mean(axis=-1, keepdims=True)
    fr = np.concatenate([fr[..., :1] * (1 - 0.97), fr[..., 1:] - 0.97 * fr[..., :-1]], axis=-1)
    fr = fr * np.hanning(flen)  # symmetric: Kaldi's "hanning"
    power = np.abs(np.fft.rfft(fr, n=n_fft, axis=-1)) ** 2
    mel = power @ kaldi_mel_banks(sample_rate, n_fft, n_mels).astype(np.float64)
    return np.log(np.maximum(mel, np.finfo(np.float32).eps)).astype(np.float32)


def _compress(s: np.ndarray, how: str) -> np.ndarray:
    if how == "log":
        return np.log(s + 1e-5)
    return s


@dataclass(frozen=True)
class FeatureSpec:
    """One model input, as a bundle manifest declares it."""

    # read by pydantic when a manifest is validated (edge_agent.model.manifest): unknown keys are refused
    __pydantic_config__ = {"extra": "forbid"}

    name: str
    kind: Literal["spectrum", "stft", "logmel", "waveform", "fbank"]
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    compress: Literal["none", "log"] = "none"
    mean_removed: bool = False
    centre: bool = False  # logmel: reflect-pad so frames are centred (PANNs)
    db: bool = False  # logmel: 10 log10 instead of ln (PANNs)
    frame_ms: float = 25.0  # fbank (Kaldi) frame length
    shift_ms: float = 10.0  # fbank (Kaldi) frame shift
    segment: int = 0  # spectrum: 0 = |FFT| of the whole window; N = mean |FFT| of its N-sample pieces

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def shape(self, window_samples: int, sample_rate: int = 16000) -> list[int]:
        """Per-window shape (without the batch axis); ``sample_rate`` matters for fbank only."""
        if self.kind == "waveform":
            return [window_samples]
        if self.kind == "spectrum":
            return [(self.segment or window_samples) // 2]
        if self.kind == "fbank":
            flen, fshift = int(sample_rate * self.frame_ms / 1000), int(sample_rate * self.shift_ms / 1000)
            return [n_frames(window_samples, flen, fshift), self.n_mels]
        t = (
            n_frames_centred(window_samples, self.hop)
            if self.centre
            else n_frames(window_samples, self.n_fft, self.hop)
        )
        return [t, self.n_mels if self.kind == "logmel" else self.n_fft // 2 + 1]

    @property
    def frame_hop(self) -> int:
        """Samples between the starts of consecutive frames when the feature is a per-frame
        computation followed by a per-window step (``frames`` then ``finish``), else 0. Two windows
        whose starts differ by a multiple of it share frames (edge_agent.model.stream_frontend)."""
        if self.kind == "stft" or (self.kind == "logmel" and not self.centre):
            return self.hop
        if self.kind == "spectrum" and self.segment:
            return self.segment
        return 0

    @property
    def frame_length(self) -> int:
        return self.segment if self.kind == "spectrum" else self.n_fft

    def frames(self, x: np.ndarray, sample_rate: int) -> np.ndarray:
        """The per-frame part of a framed feature (``frame_hop`` > 0): (..., N) -> (..., frames, bins)."""
        if self.kind == "spectrum":
            return segment_spectra(x, self.segment)
        if self.kind == "stft":
            return _compress(stft_magnitude(x, self.n_fft, self.hop), self.compress)
        return log_mel(x, sample_rate, self.n_fft, self.hop, self.n_mels, self.fmin, self.fmax, db=self.db)

    def finish(self, frames: np.ndarray) -> np.ndarray:
        """The per-window part of a framed feature: (..., frames, bins) -> the model input."""
        if self.kind == "spectrum":
            out = _compress(mean_over_frames(frames), self.compress)
        elif self.mean_removed:
            out = remove_temporal_mean(frames)
        else:
            out = frames
        return np.ascontiguousarray(out, dtype=np.float32)

    def compute(self, x: np.ndarray, sample_rate: int) -> np.ndarray:
        if self.frame_hop:
            return self.finish(self.frames(x, sample_rate))
        if self.kind == "waveform":
            out = x
        elif self.kind == "spectrum":
            out = _compress(magnitude_spectrum(x), self.compress)
        elif self.kind == "logmel":
            out = log_mel(x, sample_rate, self.n_fft, self.hop, self.n_mels, self.fmin, self.fmax, self.centre, self.db)
        elif self.kind == "fbank":
            out = kaldi_fbank(x, sample_rate, self.n_mels, self.frame_ms, self.shift_ms)
        else:  # pragma: no cover - guarded by the Literal
            raise ValueError(f"unknown feature kind {self.kind}")
        if self.mean_removed and self.kind == "logmel":
            out = remove_temporal_mean(out)
        return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True)
class Frontend:
    """The feature list of one model: windows of audio at ``sample_rate`` -> named model inputs."""

    __pydantic_config__ = {"extra": "forbid"}

    sample_rate: int
    window_samples: int
    features: tuple[FeatureSpec, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Frontend":
        return cls(
            int(d["sample_rate"]), int(d["window_samples"]), tuple(FeatureSpec.from_dict(f) for f in d["features"])
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "window_samples": self.window_samples,
            "features": [f.to_dict() for f in self.features],
        }

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    def __call__(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """(batch, window_samples) float32 at ``sample_rate`` -> {input name: (batch, ...)}."""
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim == 1:
            windows = windows[None]
        if windows.shape[-1] != self.window_samples:
            raise ValueError(f"window has {windows.shape[-1]} samples, the model expects {self.window_samples}")
        return {f.name: f.compute(windows, self.sample_rate) for f in self.features}
