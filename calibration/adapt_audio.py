"""The normal audio a machine's model is adapted on: pieces (clips, or chunks of a recording) with
their clip id, domain and fingerprint, bounded in length, and the split into the pieces the network
learns from and the pieces kept back for the label-free check and the threshold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from calibration.embed import CalibrationError, recording_chunks
from calibration.vetting import check_clip, usable_clips
from edge_agent.audio.wavio import iter_wavs

MIN_PIECES = 4  # at least 3 to learn from and 1 to check on


@dataclass(frozen=True)
class Piece:
    audio: np.ndarray  # mono float32 at the model's rate
    group: str  # the clip (or recording chunk) it is: bank groups and held-out scoring use it
    domain: str = "source"
    fingerprint: Optional[str] = None


def pieces_from_paths(paths, sample_rate: int, window_seconds: float, channel="mix", domain=None):
    """Vetted normal clips as pieces, in file-name order: (pieces, skipped (path, reason))."""
    pieces, skipped = [], []
    for f, c in usable_clips(iter_wavs(paths), sample_rate, window_seconds, channel, domain, skipped, "learnt"):
        pieces.append(Piece(c.audio.astype(np.float32, copy=False), str(f), c.domain, c.fingerprint))
    return pieces, skipped


def pieces_from_recording(x: np.ndarray, sample_rate: int, window_samples: int, domain: str = "source"):
    """A recording cut into the chunks calibration treats as clips (silent ones left out)."""
    return [
        Piece(np.asarray(a, dtype=np.float32), group, domain)
        for group, _, a, silent in recording_chunks(x, sample_rate, window_samples)
        if not silent
    ]


def bounded(pieces: list[Piece], max_seconds: float, sample_rate: int, rng: np.random.Generator) -> list[Piece]:
    """At most ``max_seconds`` of audio, pieces drawn evenly at random (order kept): memory and time
    stay bounded however much audio a machine brings."""
    total = sum(len(p.audio) for p in pieces) / sample_rate
    if total <= max_seconds:
        return pieces
    keep, have = [], 0.0
    for i in rng.permutation(len(pieces)):
        if have + len(pieces[i].audio) / sample_rate > max_seconds and keep:
            continue
        keep.append(i)
        have += len(pieces[i].audio) / sample_rate
    return [pieces[i] for i in sorted(keep)]


def split_held_out(pieces: list[Piece], fraction: float) -> tuple[list[Piece], list[Piece]]:
    """(learn, held out): the last ``fraction`` of each domain's pieces, in their order. The held-out
    pieces are a stretch the network never hears, not every n-th piece: chunks next to each other in
    time sound alike, and a check on them would flatter the adapted model."""
    if len(pieces) < MIN_PIECES:
        raise CalibrationError(
            f"adaptation needs at least {MIN_PIECES} usable clips or 5 s recording chunks, got {len(pieces)}"
        )
    learn, held = [], []
    for d in dict.fromkeys(p.domain for p in pieces):
        mine = [p for p in pieces if p.domain == d]
        k = int(round(fraction * len(mine))) if len(mine) >= MIN_PIECES else 0
        learn += mine[: len(mine) - k]
        held += mine[len(mine) - k :]
    if not held:  # every domain too small on its own: hold out the last pieces of the largest
        big = max(dict.fromkeys(p.domain for p in pieces), key=lambda d: sum(p.domain == d for p in pieces))
        last = [p for p in pieces if p.domain == big][-1]
        learn, held = [p for p in pieces if p is not last], [last]
    return learn, held


def corpus_pieces(paths, sample_rate: int, window_seconds: float, exclude: tuple = (), limit: int = 200, seed: int = 0):
    """Normal clips of other machines for outlier exposure, as pieces whose group is their machine
    folder and section (the class they train). Clips under ``exclude`` (the adapted machine's own
    folders) are left out; at most ``limit`` clips, drawn evenly at random."""
    from calibration.dataset import index_dataset

    skip = tuple(str(Path(e).resolve()) for e in exclude)
    found = []
    for root in paths:
        if not Path(root).is_dir():
            raise CalibrationError(f"--corpus {root}: no such folder")
        for c in index_dataset(Path(root), check_audio=False).clips:
            if c.condition != "normal" or str(Path(c.path).resolve()).startswith(skip):
                continue
            found.append(c)
    rng = np.random.default_rng(seed)
    if len(found) > limit:
        found = [found[i] for i in sorted(rng.choice(len(found), limit, replace=False))]
    out = []
    for c in found:
        chk = check_clip(c.path, sample_rate, window_seconds)
        if chk.ok:
            out.append(Piece(chk.audio.astype(np.float32, copy=False), f"{c.group}|{c.section}", c.domain))
    return out
