"""Recording a machine's normal sound live from its configured input, with a progress bar and a
level meter (``calibrate --seconds``)."""

from __future__ import annotations

import sys
import time

import numpy as np

from calibration.embed import CalibrationError
from edge_agent.audio import open_source
from edge_agent.audio.convert import level_dbfs, prepare
from edge_agent.config import Config

NO_AUDIO_SECONDS = 15.0  # a dead input must not hang calibration


def record_live(cfg: Config, machine: str, seconds: float, model_rate: int, out=sys.stderr) -> np.ndarray:
    """Record from the machine's configured input with a progress bar and a level meter."""
    from tqdm import tqdm

    if machine not in cfg.machines:
        raise CalibrationError(
            f"machine {machine!r} is not in the config (machines: {', '.join(cfg.machines) or 'none'}); "
            "add it with its input, or use --from with WAV files"
        )
    mc = cfg.machines[machine]
    src = open_source(machine, mc, model_rate)
    src.start()
    chunks, got, rate = [], 0, None
    bar = tqdm(
        total=round(seconds, 1),
        desc=f"recording {machine}",
        unit="s",
        file=out,
        bar_format="{l_bar}{bar}| {n:.1f}/{total} s {postfix}",
    )
    last_audio = time.monotonic()  # an input that delivers nothing for this long ends the recording
    try:
        while got < seconds and time.monotonic() - last_audio < NO_AUDIO_SECONDS:
            src.ring.wait(0.2)
            frames = src.ring.read()
            if not len(frames):
                if src.error:
                    bar.set_postfix_str(f"input problem: {src.error}")
                continue
            rate, last_audio = src.sample_rate, time.monotonic()
            chunks.append(prepare(frames, rate, model_rate, mc.input.channel))
            got += len(frames) / rate
            db = level_dbfs(frames)
            meter = "#" * int(max(0, min(30, (db + 90) / 3)))
            bar.set_postfix_str(
                f"level {db:6.1f} dBFS {meter:<30}" + ("  SILENT - is the microphone muted?" if db < -80 else "")
            )
            bar.update(min(len(frames) / rate, seconds - bar.n))
            if src.finished:
                break
    finally:
        bar.close()
        src.stop()
    if not chunks:
        raise CalibrationError(
            f"no audio arrived from the input of {machine} ({src.error or 'nothing delivered'}); check it with "
            + ("'edge-agent probe URL'" if mc.input.url else "'edge-agent devices'")
        )
    return np.concatenate(chunks)
