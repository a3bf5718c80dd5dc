"""Reading WAV files into float32 arrays, with errors that name the file and the problem."""
from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError


class AudioFileError(UserError):
    """A WAV file that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class WavInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Return (samples as float32 in [-1, 1], shape (frames, channels)), sample_rate)."""
    from scipy.io import wavfile  # imported here: live capture needs no WAV reader

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    try:
        sr, x = wavfile.read(path)
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds (even UnboundLocalError) on a corrupt header
        raise AudioFileError(f"{path}: not a readable WAV file ({type(e).__name__}: {e}); re-record or re-export it as PCM WAV") from None
    x = _to_float(x, path)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no audio frames")
    return x, int(sr)


def wav_info(path: str | Path) -> WavInfo:
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            return WavInfo(path, w.getframerate(), w.getnchannels(), w.getnframes())
    except (wave.Error, EOFError, OSError):
        x, sr = read_wav(path)  # float WAVs are not readable by `wave`; scipy handles them
        return WavInfo(path, sr, x.shape[1], x.shape[0])


def _to_float(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype == np.int32:
        return (x.astype(np.float64) / 2147483648.0).astype(np.float32)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if x.dtype in (np.float32, np.float64):
        return x.astype(np.float32, copy=False)
    raise AudioFileError(f"{path}: unsupported sample format {x.dtype}")


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int) -> None:
    """Write float audio in [-1, 1] as 16-bit PCM."""
    from scipy.io import wavfile

    x = np.asarray(x, dtype=np.float32)
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    wavfile.write(Path(path), int(sample_rate), pcm)
