"""The label-free check that decides whether a machine keeps its adapted model.

No anomalous sound of the machine exists when it is enrolled, so the check makes some: each
held-out normal window (audio the adaptation never heard) gets one synthetic fault of five kinds
that condition monitoring knows (a new tone, a resonance that grows or fades, impacts, a beat, a
noise floor that rises), at random strengths from barely audible up. Both models then build a bank
from the windows the adaptation learnt from and score the held-out windows as they are and with
their fault; the AUC of the two says how well each model tells the machine's own unseen normal
sound from it changed. The adapted model is kept only when its AUC is higher than the generic
model's beyond the check's noise: the lower end of the 95 % bootstrap interval of the difference
is above zero. Why this check: it needs no labels, it uses audio neither the network nor the bank saw,
and it measures what the agent does with the model (k-NN distance to the bank), on both models
alike. What it cannot promise: real faults are not these five; a model that hears these better is
not shown to hear a given machine's real faults better (the closing numbers in docs/model.md say
how it did on recorded faults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from sklearn.metrics import roc_auc_score

FAULTS = ("tone", "resonance", "impacts", "beat", "noise")
BOOTSTRAP = 500

Embed = Callable[[np.ndarray], np.ndarray]  # windows (n, samples) -> unit embeddings (n, dim)


def synthetic_fault(x: np.ndarray, kind: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One window with one synthetic fault, its strength drawn from a range that starts near inaudible."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    rms = float(np.sqrt(np.mean(x**2))) + 1e-9
    t = np.arange(n) / sample_rate
    nyq = sample_rate / 2
    if kind == "tone":  # a bearing or gear tone: a sinusoid 24 to 0 dB under the machine
        f = float(np.exp(rng.uniform(np.log(80.0), np.log(0.8 * nyq))))
        y = x + rms * 10 ** (rng.uniform(-24, 0) / 20) * np.sqrt(2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
    elif kind == "resonance":  # one octave 4 to 12 dB louder or softer
        spec = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(n, 1 / sample_rate)
        lo = float(np.exp(rng.uniform(np.log(60.0), np.log(0.45 * nyq))))
        gain = 10 ** (rng.choice([-1, 1]) * rng.uniform(4, 12) / 20)
        spec[(freqs >= lo) & (freqs < 2 * lo)] *= gain
        y = np.fft.irfft(spec, n)
    elif kind == "impacts":  # knocks: short decaying bursts, 1 to 6 a second
        y = x.copy()
        burst = int(0.004 * sample_rate)
        env = np.exp(-np.arange(burst) / (burst / 4))
        for s in rng.integers(0, max(1, n - burst), max(1, int(rng.uniform(1, 6) * n / sample_rate))):
            y[s : s + burst] += rms * rng.uniform(1.5, 6.0) * env * rng.standard_normal(burst)
    elif kind == "beat":  # unbalance or a loose part: the sound swells and fades 2 to 25 times a second
        y = x * (1 + rng.uniform(0.15, 0.5) * np.sin(2 * np.pi * rng.uniform(2, 25) * t))
    elif kind == "noise":  # a leak or rubbing: broadband noise 24 to 4 dB under the machine
        y = x + rms * 10 ** (rng.uniform(-24, -4) / 20) * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown synthetic fault {kind!r}")
    return y.astype(np.float32)


def faulted(windows: np.ndarray, sample_rate: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every window with one fault, the kinds taken in turn: (faulted windows, kind of each)."""
    rng = np.random.default_rng(seed)
    kinds = np.array([FAULTS[i % len(FAULTS)] for i in range(len(windows))])
    return np.stack([synthetic_fault(w, k, rng, sample_rate) for w, k in zip(windows, kinds)]), kinds


def knn_scores(bank: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine distance of each query to its nearest bank entry (unit vectors), as the runtime's k-NN."""
    return 1.0 - (queries @ bank.T).max(axis=1)


@dataclass
class ModelCheck:
    auc: float
    by_fault: dict[str, float]
    normal_median: float  # the held-out normal windows' median distance to the bank
    scores: tuple[np.ndarray, np.ndarray] = field(repr=False, default=(np.zeros(0), np.zeros(0)))


def check_model(
    embed: Embed, learn: np.ndarray, held: np.ndarray, changed: np.ndarray, kinds, bank: Optional[np.ndarray] = None
) -> ModelCheck:
    """``bank``: the embeddings of ``learn`` when they are already at hand."""
    bank = embed(learn) if bank is None else bank
    normal, anomal = knn_scores(bank, embed(held)), knn_scores(bank, embed(changed))
    by = {k: _auc(normal, anomal[kinds == k]) for k in FAULTS if (kinds == k).any()}
    return ModelCheck(_auc(normal, anomal), by, float(np.median(normal)), (normal, anomal))


def _auc(normal: np.ndarray, anomal: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(anomal))], np.r_[normal, anomal]))


def paired_interval(a: ModelCheck, b: ModelCheck, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of AUC(b) - AUC(a) over the held-out windows (each with its own fault)."""
    rng = np.random.default_rng(seed)
    (na, fa), (nb, fb) = a.scores, b.scores
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(na), len(na))
        if len(np.unique(i)) < 2:
            continue
        diffs.append(_auc(nb[i], fb[i]) - _auc(na[i], fa[i]))
    return (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))) if diffs else (np.nan, np.nan)


def compare(
    generic: Embed,
    adapted: Embed,
    learn: np.ndarray,
    held: np.ndarray,
    sample_rate: int,
    seed: int = 0,
    generic_bank: Optional[np.ndarray] = None,
) -> dict:
    """The check on both models: AUCs, per-fault AUCs, the interval of the difference and the verdict.
    ``generic_bank``: the generic model's embeddings of ``learn``, when already computed."""
    changed, kinds = faulted(held, sample_rate, seed)
    g = check_model(generic, learn, held, changed, kinds, generic_bank)
    a = check_model(adapted, learn, held, changed, kinds)
    lo, hi = paired_interval(g, a, seed)
    return {
        "method": "k-NN AUC of held-out normal windows against the same windows with a synthetic fault",
        "faults": list(FAULTS),
        "windows": {"learnt": int(len(learn)), "held_out": int(len(held))},
        "generic": {"auc": g.auc, "by_fault": g.by_fault, "normal_median": g.normal_median},
        "adapted": {"auc": a.auc, "by_fault": a.by_fault, "normal_median": a.normal_median},
        "difference": {"value": a.auc - g.auc, "interval95": [lo, hi]},
        # kept only when better beyond the check's own noise: on the development sets a tie kept a model
        # that heard the recorded faults far worse (docs/model.md, "Field adaptation")
        "kept": bool(lo > 0),
    }
