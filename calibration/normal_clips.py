"""A few clips of the enrolled normal sound kept beside the bank, so that the status page can play
"normal" next to an alarm's evidence (A/B listening): up to ``MAX_CLIPS`` pieces of
``CLIP_SECONDS``, mono 16-bit at the model's rate (about 1 MB in all), spread over the enrolment,
replaced at every calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edge_agent.audio.convert import prepare
from edge_agent.audio.wavio import read_wav, write_wav
from edge_agent.state.paths import normal_dir

MAX_CLIPS = 3
CLIP_SECONDS = 10.0


def _spread(items: Sequence, n: int) -> list:
    if len(items) <= n:
        return list(items)
    return [items[int(round(i * (len(items) - 1) / (n - 1)))] for i in range(n)] if n > 1 else [items[0]]


def keep_normal_clips(
    state_dir: Path,
    machine: str,
    rate: int,
    files: Sequence[Path] = (),
    recording: Optional[np.ndarray] = None,
    channel="mix",
) -> list[Path]:
    """Write the clips (from the enrolment's files, or slices of a live recording); the files kept."""
    n = int(CLIP_SECONDS * rate)
    pieces: list[np.ndarray] = []
    if recording is not None and len(recording):
        starts = _spread(list(range(0, max(1, len(recording) - n + 1), n)), MAX_CLIPS)
        pieces = [recording[s : s + n] for s in starts]
    else:
        for f in _spread(sorted(files), MAX_CLIPS):
            try:
                x, sr = read_wav(f)
            except Exception:  # noqa: BLE001 - a clip that cannot be read was reported by the enrolment
                continue
            pieces.append(prepare(x, sr, rate, channel)[:n])
    out_dir = normal_dir(state_dir, machine)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("normal-*.wav"):
        old.unlink()
    out = []
    for i, p in enumerate(pieces, 1):
        path = out_dir / f"normal-{i}.wav"
        write_wav(path, np.clip(p, -1.0, 1.0).astype(np.float32), rate)
        out.append(path)
    return out
