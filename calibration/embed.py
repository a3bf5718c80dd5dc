"""Embedding enrolment audio: clips from files (vetted first) and live recordings cut into chunks
that act as clips for leave-one-clip-out scoring."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from calibration.enrol import Enrolment
from calibration.vetting import usable_clips
from edge_agent.audio.convert import SILENT_PEAK
from edge_agent.audio.wavio import iter_wavs
from edge_agent.audio.windows import frame_windows
from edge_agent.errors import UserError
from edge_agent.model.outputs import infer_signal
from edge_agent.scoring.bands import band_levels

LIVE_CHUNK_SECONDS = 5.0  # live recordings are split into chunks that act as clips for leave-one-out


class CalibrationError(UserError):
    """Not enough usable audio, or a request the model cannot serve; exit code 2. ``skipped`` and
    ``outliers``: the clips left out, when the error is about too little audio."""

    def __init__(self, message: str, skipped: tuple = (), outliers: tuple = ()):
        super().__init__(message)
        self.skipped, self.outliers = list(skipped), list(outliers)


def embed_piece(engine, fe, x: np.ndarray, hop_samples: int):
    """Embeddings of a signal's windows, one row per embedding, and all the model's outputs per window."""
    out = infer_signal(engine, fe, x, hop_samples)
    return split_embeddings(engine, out["embedding"]), out


class _Gather:
    """Embeds pieces of enrolment audio and gathers them per domain: embeddings, the clip id of
    every window, and (when asked) the model's outputs and the window levels."""

    def __init__(
        self,
        engine,
        hop_samples: int,
        outputs_out: Optional[dict],
        levels_out: Optional[list],
        bands_out: Optional[list] = None,
    ):
        self.engine, self.hop, self.outputs_out, self.levels_out = engine, hop_samples, outputs_out, levels_out
        self.bands_out = bands_out
        self.per_domain: dict[str, tuple[list, list]] = {}

    def add(self, domain: str, group: str, audio: np.ndarray) -> None:
        fe = self.engine.bundle.frontend
        e, out = embed_piece(self.engine, fe, audio, self.hop)
        if self.outputs_out is not None:
            self.outputs_out.setdefault(domain, []).append(out)
        if self.levels_out is not None:  # the windows' levels, as the indicators measured them
            self.levels_out.append(out["indicators"][:, 0])
        if self.bands_out is not None:  # third-octave levels of the same windows (what alarms explain)
            self.bands_out.append(band_levels(frame_windows(audio, fe.window_samples, self.hop), fe.sample_rate))
        embs, groups = self.per_domain.setdefault(domain, ([], []))
        embs.append(e)
        groups.extend([group] * len(e))


def embed_files(
    paths,
    engine,
    fe,
    hop_samples: int,
    channel="mix",
    domain: Optional[str] = None,
    desc: str = "enrolling",
    progress: bool = True,
    outputs_out: Optional[dict] = None,
    levels_out: Optional[list] = None,
    fingerprints_out: Optional[dict] = None,
    bands_out: Optional[list] = None,
) -> tuple[dict[str, tuple[list, list]], list[tuple[Path, str]]]:
    """Vet and embed normal clips: {domain: (embedding arrays, clip id per window)}, skipped (path, reason).
    With ``outputs_out``, every clip's model outputs are appended to ``outputs_out[domain]``; with
    ``levels_out``, every clip's window levels (dBFS); with ``fingerprints_out``, clip id -> fingerprint;
    with ``bands_out``, every clip's windows' third-octave band levels."""
    from tqdm import tqdm

    files = list(iter_wavs(paths))
    if not files:
        raise CalibrationError(f"no WAV files in {', '.join(map(str, paths))}")
    gather = _Gather(engine, hop_samples, outputs_out, levels_out, bands_out)
    skipped: list[tuple[Path, str]] = []
    bar = tqdm(files, desc=desc, unit="clip", file=sys.stderr, disable=not progress)
    for f, c in usable_clips(bar, fe.sample_rate, fe.window_seconds, channel, domain, skipped):
        gather.add(c.domain, str(f), c.audio)
        if fingerprints_out is not None:
            fingerprints_out[str(f)] = c.fingerprint
    return gather.per_domain, skipped


def split_embeddings(engine, emb):
    """(windows, n * dim) -> (windows * n, dim): every embedding of a frame-sequence model is its
    own bank entry (the published memory bank of context-window embeddings)."""
    dim = engine.bundle.embedding_dim
    return emb.reshape(-1, dim)


def to_enrolments(per_domain: dict[str, tuple[list, list]]) -> dict[str, Enrolment]:
    return {d: Enrolment(np.concatenate(v[0]), np.array(v[1]), d) for d, v in per_domain.items()}


def embed_recording(
    x: np.ndarray,
    engine,
    hop_samples: int,
    domain: str,
    outputs_out: Optional[dict] = None,
    levels_out: Optional[list] = None,
    bands_out: Optional[list] = None,
) -> tuple[dict[str, tuple[list, list]], list[tuple[Path, str]]]:
    """A live recording as chunks of ``LIVE_CHUNK_SECONDS`` (silent chunks skipped), in the shape
    ``embed_files`` returns."""
    fe = engine.bundle.frontend
    gather = _Gather(engine, hop_samples, outputs_out, levels_out, bands_out)
    skipped = []
    for group, start, piece, silent in recording_chunks(x, fe.sample_rate, fe.window_samples):
        if silent:
            skipped.append((Path(f"recording[{start:.0f}s]"), "silent (digital silence or a muted input)"))
        else:
            gather.add(domain, group, piece)
    return gather.per_domain, skipped


def recording_chunks(x: np.ndarray, sample_rate: int, window_samples: int):
    """A recording as the chunks that act as its clips: (group, start in s, audio, silent) for every
    ``LIVE_CHUNK_SECONDS``; a last piece shorter than a window is left out, unless no sound came
    before it (then the whole recording is one group). Enrolment and adaptation cut alike, so the
    chunks an adapted model learnt are the ones its threshold fit leaves out."""
    chunk = int(LIVE_CHUNK_SECONDS * sample_rate)
    sound = False
    for i, s in enumerate(range(0, len(x), chunk)):
        piece = x[s : s + chunk]
        if len(piece) < window_samples:
            if sound:
                return
            piece = x  # a recording shorter than one chunk is one group
        silent = float(np.abs(piece).max()) < SILENT_PEAK
        sound = sound or not silent
        yield f"chunk{i}", s / sample_rate, piece, silent
