"""Embedding enrolment audio: clips from files (vetted first) and live recordings cut into chunks
that act as clips for leave-one-clip-out scoring."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from edge_agent.audio.convert import SILENT_PEAK, window_levels
from edge_agent.audio.wavio import iter_wavs
from edge_agent.dataset import LabelError, parse_path
from edge_agent.embedding import infer_signal
from edge_agent.errors import UserError

from .enrol import Enrolment
from .vetting import check_clip

LIVE_CHUNK_SECONDS = 5.0  # live recordings are split into chunks that act as clips for leave-one-out


class CalibrationError(UserError):
    """Not enough usable audio, or a request the model cannot serve; exit code 2. ``skipped`` and
    ``outliers``: the clips left out, when the error is about too little audio."""

    skipped: list = []
    outliers: list = []


def embed_piece(engine, fe, x: np.ndarray, hop_samples: int):
    """Embeddings of a signal's windows, one row per embedding, and all the model's outputs per window."""
    out = infer_signal(engine, fe, x, hop_samples)
    return split_embeddings(engine, out["embedding"]), out


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
) -> tuple[dict[str, tuple[list, list]], list[tuple[Path, str]]]:
    """Vet and embed normal clips: {domain: (embedding arrays, clip id per window)}, skipped (path, reason).
    With ``outputs_out``, every clip's model outputs are appended to ``outputs_out[domain]``; with
    ``levels_out``, every clip's window levels (dBFS)."""
    from tqdm import tqdm

    files = list(iter_wavs(paths))
    if not files:
        raise CalibrationError(f"no WAV files in {', '.join(map(str, paths))}")
    per_domain: dict[str, tuple[list, list]] = {}
    skipped: list[tuple[Path, str]] = []
    for f in tqdm(files, desc=desc, unit="clip", file=sys.stderr, disable=not progress):
        try:
            if parse_path(f).condition == "anomaly":
                skipped.append((f, "labelled anomalous in its file name; only normal sound is enrolled"))
                continue
        except LabelError:
            pass
        c = check_clip(f, fe.sample_rate, fe.window_seconds, channel, domain)
        if not c.ok:
            skipped.append((f, c.reason))
            continue
        e, out = embed_piece(engine, fe, c.audio, hop_samples)
        if outputs_out is not None:
            outputs_out.setdefault(c.domain, []).append(out)
        if levels_out is not None:
            levels_out.append(window_levels(c.audio, fe.window_samples, hop_samples))
        per_domain.setdefault(c.domain, ([], []))
        per_domain[c.domain][0].append(e)
        per_domain[c.domain][1].extend([str(f)] * len(e))
    return per_domain, skipped


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
) -> tuple[dict[str, tuple[list, list]], list[tuple[Path, str]]]:
    """A live recording as chunks of ``LIVE_CHUNK_SECONDS`` (silent chunks skipped), in the shape
    ``embed_files`` returns."""
    fe = engine.bundle.frontend
    chunk = int(LIVE_CHUNK_SECONDS * fe.sample_rate)
    embs, groups, skipped = [], [], []
    for i, s in enumerate(range(0, len(x), chunk)):
        piece = x[s : s + chunk]
        if len(piece) < fe.window_samples:
            if embs:
                break
            piece = x  # a recording shorter than one chunk is one group
        if float(np.abs(piece).max()) < SILENT_PEAK:
            skipped.append((Path(f"recording[{s / fe.sample_rate:.0f}s]"), "silent (digital silence or a muted input)"))
            continue
        e, out = embed_piece(engine, fe, piece, hop_samples)
        if outputs_out is not None:
            outputs_out.setdefault(domain, []).append(out)
        if levels_out is not None:
            levels_out.append(window_levels(piece, fe.window_samples, hop_samples))
        embs.append(e)
        groups.extend([f"chunk{i}"] * len(e))
    return ({domain: (embs, groups)} if embs else {}), skipped
