"""Reading WAV files into float32 arrays, with errors that name the file and the problem."""

from __future__ import annotations

import logging
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from edge_agent.audio.convert import finite, float_to_pcm16
from edge_agent.errors import UserError

log = logging.getLogger("edge_agent.wav")
_warned: set[tuple[str, str]] = set()  # (file, warning) already logged: a looping replay says it once
MAX_SAMPLE_RATE = 768_000  # Hz: above any audio interface; a header claiming more is corrupt
MAX_CHANNELS = 64


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


def _read_pcm16(path: Path) -> Optional[tuple[int, np.ndarray]]:
    """(rate, int16 samples) through the standard library's ``wave``, for the common case: a
    complete 16-bit PCM file. None for anything else (float, 24-bit, extensible headers, a file cut
    short), which scipy reads with its warnings. The agent then never imports scipy.io, which with
    the scipy.sparse it loads is about 4 MB of a running agent (docs/performance.md, Memory)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if width != 2 or channels < 1 or not 0 < rate <= MAX_SAMPLE_RATE:
                return None
            raw = w.readframes(frames)
    except Exception:  # noqa: BLE001 - `wave` raises Error, EOFError, struct.error... on what it cannot read
        return None
    if len(raw) != frames * channels * 2:
        return None
    return rate, np.frombuffer(raw, dtype="<i2").reshape(-1, channels)


def pcm16_blocks(path: Path, block: int, sample_rate: int, channels: int) -> Optional[Iterator[np.ndarray]]:
    """A 16-bit PCM file of this rate and channel count as int16 blocks of ``block`` frames, read
    as they are used: a replay holds one block of a file, not the file (an hour of it would be
    115 MB). None for any other file, or one without frames: ``read_wav`` reads or refuses it whole."""
    try:
        w = wave.open(str(path), "rb")
    except Exception:  # noqa: BLE001 - `wave` raises Error, EOFError, struct.error... on what it cannot read
        return None
    if (w.getsampwidth(), w.getframerate(), w.getnchannels()) != (2, sample_rate, channels) or not w.getnframes():
        w.close()
        return None
    return _blocks(w, path, block)


def _blocks(w: wave.Wave_read, path: Path, block: int) -> Iterator[np.ndarray]:
    with w:
        frames, size, got = w.getnframes(), 2 * w.getnchannels(), 0
        while got < frames:
            try:
                raw = w.readframes(block)
            except Exception:  # noqa: BLE001 - a chunk damaged after the header: use what came before
                raw = b""
            if len(raw) < size:
                _warn_once(path, f"truncated (the header gives {frames} frames); using the {got} frames it holds")
                return
            x = np.frombuffer(raw[: len(raw) // size * size], dtype="<i2").reshape(-1, w.getnchannels())
            got += len(x)
            yield x


def read_wav(path: str | Path, pcm16: bool = False) -> tuple[np.ndarray, int]:
    """Return (samples as float32 in [-1, 1], shape (frames, channels)), sample_rate); with
    ``pcm16``, a 16-bit PCM file's samples as int16 (half the memory: a replay keeps them so)."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    pcm = _read_pcm16(path)
    sr, x = pcm if pcm is not None else _read_with_scipy(path)
    _check_header(path, int(sr), x.shape[1] if x.ndim > 1 else 1)
    x = x if pcm16 and x.dtype == np.int16 else _to_float(x, path)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no audio frames")
    x, bad = finite(x)  # float WAVs can hold NaN/Inf
    if bad:
        _warn_once(path, f"{bad} NaN/Inf sample(s) replaced by silence (0)")
    return x, int(sr)


def _check_header(path: Path, sr: int, channels: int) -> None:
    """Refuse rates and channel counts no recording has (a corrupt header would size buffers by them)."""
    if not 0 < sr <= MAX_SAMPLE_RATE:
        raise AudioFileError(
            f"{path}: the header gives a sample rate of {sr} Hz (1 to {MAX_SAMPLE_RATE} expected); "
            "re-record or re-export it as PCM WAV"
        )
    if not 0 < channels <= MAX_CHANNELS:
        raise AudioFileError(f"{path}: the header gives {channels} channels (1 to {MAX_CHANNELS} expected)")


def _warn_once(path: Path, text: str) -> None:
    if (str(path), text) not in _warned:
        _warned.add((str(path), text))
        log.warning("%s: %s", path, text)


def _read_with_scipy(path: Path) -> tuple[int, np.ndarray]:
    from scipy.io import wavfile  # imported here: 16-bit PCM and live capture need no scipy.io

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            sr, x = wavfile.read(path)
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds (even UnboundLocalError) on a corrupt header
        raise AudioFileError(
            f"{path}: not a readable WAV file ({type(e).__name__}: {e}); re-record or re-export it as PCM WAV"
        ) from None
    for w in caught:
        # e.g. a recording cut off while it was written: say so once, in words, and use what is there
        if (str(path), str(w.message)) in _warned:
            continue
        _warned.add((str(path), str(w.message)))
        if "EOF" in str(w.message):
            log.warning("%s: truncated (%s); using the %d frames it holds", path, w.message, len(x))
        elif "not understood, skipping" in str(w.message):
            # metadata chunks scipy does not parse (float WAVs' PEAK, editors' LIST/bext): the audio is whole
            log.debug("%s: %s", path, w.message)
        else:
            log.warning("%s: %s", path, w.message)
    return sr, x


def wav_info(path: str | Path) -> WavInfo:
    """Rate, channels and length from the header, or from reading the file when ``wave`` cannot
    (float WAVs, odd chunks); any file that neither reads raises ``AudioFileError``."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            info = WavInfo(path, w.getframerate(), w.getnchannels(), w.getnframes())
        if info.sample_rate > 0 and info.channels > 0:
            _check_header(path, info.sample_rate, info.channels)
            return info
    except AudioFileError:
        raise
    except Exception:  # noqa: BLE001 - `wave` raises Error, EOFError, RuntimeError, struct.error... on corrupt chunks
        pass
    x, sr = read_wav(path)
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


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> little-endian int16 samples (a new array), as the ring stores them:
    16-bit audio read as floats (k / 32768) is written back bit for bit. int16 is copied as is."""
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x.astype("<i2")
    return float_to_pcm16(x)[0].astype("<i2", copy=False)


def write_wav(path, x: np.ndarray, sample_rate: int) -> None:
    """Write audio, (frames,) or (frames, channels), as 16-bit PCM to a path or an open binary file
    (the standard library's ``wave``): floats in [-1, 1], or int16 samples as they are."""
    pcm = to_pcm16(x)
    with wave.open(path if hasattr(path, "write") else str(path), "wb") as w:
        w.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def walk_dirs(root: Path) -> Iterable[tuple[Path, list[str], list[str]]]:
    """os.walk that follows symlinked folders (datasets are often linked in) without looping."""
    import os

    seen: set[str] = set()
    for d, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        yield Path(d), dirs, files


def iter_wavs(paths: Iterable[str | Path]) -> Iterable[Path]:
    for p in paths:
        p = Path(p)
        if p.is_dir():
            yield from sorted(d / f for d, _, files in walk_dirs(p) for f in files if f.lower().endswith(".wav"))
        else:
            yield p
