"""Third-octave band levels of a window of sound, and what an alarm says changed.

At enrolment calibrate keeps each third-octave band's median level over the normal windows and
its spread (``profile``, in the bank's metadata). When an alarm starts, the window that raised it
is measured the same way and ``explain`` names the bands that moved furthest from normal, in
units of their enrolled spread, with the change in dB: a technician reads "2 kHz +14 dB" before
walking to the machine. Bands follow ISO 266 (base-10 centres, nominal labels). Computed at
enrolment and once per alarm, never per window: a 2 s FFT per window would cost more than the
indicators do.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

NOMINAL = (
    25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800,
    1000, 1250, 1600, 2000, 2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000,
)  # fmt: skip
SPREAD_FLOOR_DB = 1.0  # a band steadier than this in the enrolment still counts 1 dB as one spread
TOP = 3


def centres(sample_rate: int) -> list[tuple[float, float]]:
    """(nominal, exact) centre frequencies of the bands that lie below the Nyquist frequency."""
    out = []
    for i, nominal in enumerate(NOMINAL):
        exact = 1000.0 * 10 ** ((i - NOMINAL.index(1000)) / 10)
        if exact * 2 ** (1 / 6) < sample_rate / 2:
            out.append((float(nominal), exact))
    return out


def band_levels(windows: np.ndarray, sample_rate: int) -> np.ndarray:
    """(n, samples) windows -> (n, bands) levels in dB (power per band, relative to full scale)."""
    w = np.atleast_2d(np.asarray(windows, np.float32))
    n = w.shape[1]
    power = np.abs(np.fft.rfft(w, axis=1)) ** 2 * (2.0 / (n * n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    cs = centres(sample_rate)
    out = np.empty((len(w), len(cs)), np.float64)
    for j, (_, fc) in enumerate(cs):
        band = (freqs >= fc / 2 ** (1 / 6)) & (freqs < fc * 2 ** (1 / 6))
        out[:, j] = 10 * np.log10(power[:, band].sum(axis=1) + 1e-20)
    return out


def profile(levels: np.ndarray, sample_rate: int) -> Optional[dict]:
    """The enrolled windows' median level and spread per band (robust: 1.4826 x the median absolute
    deviation, at least ``SPREAD_FLOOR_DB``), as stored in a bank."""
    x = np.asarray(levels, np.float64)
    if x.ndim != 2 or len(x) < 2:
        return None
    med = np.median(x, axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(x - med), axis=0), SPREAD_FLOOR_DB)
    return {
        "sample_rate": int(sample_rate),
        "centres_hz": [c for c, _ in centres(sample_rate)],
        "median_db": [round(float(v), 2) for v in med],
        "spread_db": [round(float(v), 2) for v in spread],
    }


def explain(prof: dict, window: np.ndarray, level_change_db: Optional[float] = None, top: int = TOP) -> dict:
    """What changed in ``window`` against the enrolled ``prof``: the ``top`` bands furthest from their
    enrolled median (in spreads), each with its change in dB, and the window's overall level change."""
    levels = band_levels(window, prof["sample_rate"])[0]
    med, spread = np.asarray(prof["median_db"]), np.asarray(prof["spread_db"])
    z = (levels - med) / spread
    order = np.argsort(-np.abs(z))[:top]
    out: dict = {
        "bands": [
            {
                "centre_hz": prof["centres_hz"][i],
                "change_db": round(float(levels[i] - med[i]), 1),
                "spreads": round(float(z[i]), 1),
            }
            for i in order
        ]
    }
    if level_change_db is not None and np.isfinite(level_change_db):
        out["level_change_db"] = round(float(level_change_db), 1)
    return out


def describe(explanation: dict) -> str:
    """'2000 Hz +14.2 dB, 2500 Hz +6.1 dB; level +3.0 dB' for logs and the console."""
    bands = ", ".join(f"{b['centre_hz']:g} Hz {b['change_db']:+.1f} dB" for b in explanation.get("bands", []))
    level = explanation.get("level_change_db")
    return bands + (f"; level {level:+.1f} dB" if level is not None else "")
