"""The front end of one stream: each frame is computed once, not once per overlapping window.

At hop 1 s a 2 s window shares half its audio with the window before it. For framed features
(STFT and non-centred log-mel frames, spectrum pieces: ``FeatureSpec.frame_hop``) the frames of
that shared audio are taken from the previous window, and only the new audio's frames are
computed; the per-window step (temporal mean removal, the mean over pieces) then runs on the
assembled frames, so the features equal the batch front end's within float rounding. Frames are
reused only when the two windows' starts differ by a multiple of the frame hop and the shared audio
is verified to be the same samples (a gap, a reset windower or a resampled window recompute all).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from edge_agent.audio.windows import n_frames
from edge_agent.model.frontend import FeatureSpec, Frontend


def frame_count(spec: FeatureSpec, n_samples: int) -> int:
    if n_samples < spec.frame_length:
        return 0
    if spec.kind == "spectrum":  # non-overlapping pieces
        return n_samples // spec.frame_length
    return n_frames(n_samples, spec.frame_length, spec.frame_hop)


class StreamFrontend:
    def __init__(self, frontend: Frontend):
        self.frontend = frontend
        self._start: Optional[int] = None
        self._samples: Optional[np.ndarray] = None
        self._frames: dict[str, np.ndarray] = {}
        self.frames_computed = 0
        self.frames_reused = 0

    def reset(self) -> None:
        self._start, self._samples, self._frames = None, None, {}

    def _shift(self, x: np.ndarray, start: Optional[int]) -> Optional[int]:
        """Samples since the previous window's start, if the audio they share is verified the same."""
        if start is None or self._start is None or self._samples is None:
            return None
        d = start - self._start
        if not 0 <= d < len(x) or len(self._samples) != len(x):
            return None
        return d if np.array_equal(self._samples[d:], x[: len(x) - d]) else None

    def __call__(self, samples: np.ndarray, start: Optional[int]) -> dict[str, np.ndarray]:
        """One window (window_samples,) that starts at sample ``start`` of its stream (at the model's
        rate; None when unknown) -> {input name: (1, ...)}, as ``Frontend`` gives for a batch of one."""
        fe = self.frontend
        x = np.asarray(samples, dtype=np.float32)
        if x.shape != (fe.window_samples,):
            raise ValueError(f"window has shape {x.shape}, the model expects ({fe.window_samples},)")
        shift = self._shift(x, start)
        out, frames = {}, {}
        for spec in fe.features:
            hop = spec.frame_hop
            if not hop:
                out[spec.name] = spec.compute(x[None], fe.sample_rate)
                continue
            total = frame_count(spec, len(x))
            prev = self._frames.get(spec.name)
            keep = None
            if shift is not None and prev is not None and shift % hop == 0:
                keep = prev[shift // hop :][:total]
            if keep is None or not len(keep):
                fr = spec.frames(x, fe.sample_rate)
                self.frames_computed += total
            else:
                parts = [keep]
                if total > len(keep):
                    parts.append(spec.frames(x[len(keep) * hop :], fe.sample_rate))
                fr = np.concatenate(parts) if len(parts) > 1 else keep
                self.frames_reused += len(keep)
                self.frames_computed += total - len(keep)
            frames[spec.name] = fr
            out[spec.name] = spec.finish(fr)[None]
        self._start, self._samples, self._frames = start, x.copy(), frames
        return out


def stack_features(per_window: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several windows' {name: (1, ...)} -> one batch {name: (n, ...)}."""
    return {k: np.concatenate([f[k] for f in per_window]) for k in per_window[0]}
