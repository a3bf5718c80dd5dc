"""Windows of WAV clips, read one at a time: real sound for export's parity check and for INT8
calibration."""

from __future__ import annotations

from edge_agent.audio.convert import prepare
from edge_agent.audio.wavio import iter_wavs, read_wav
from edge_agent.audio.windows import frame_windows


def clip_windows(paths, sample_rate: int, window: int, hop: int, limit: int):
    """Up to ``limit`` windows of the WAV clips under ``paths`` (files or folders), mono at
    ``sample_rate``, one at a time: real sound for parity checks and quantisation."""
    n = 0
    for p in iter_wavs(paths):
        x, sr = read_wav(p)
        for w in frame_windows(prepare(x, sr, sample_rate), window, hop):
            if n >= limit:
                return
            n += 1
            yield w
