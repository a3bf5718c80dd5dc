"""Calibration as a library: vet, embed and enrol a machine's normal sound into a bank with a
threshold. ``calibrate(request, engine, existing)`` is what ``edge-agent calibrate`` runs; the
demo, ``evaluate`` and the benchmarks enrol through ``enrol_paths``. Nothing here prints, reads
argparse or writes files; the CLI does that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from calibration.embed import CalibrationError, embed_files, embed_recording, to_enrolments
from calibration.enrol import EnrolResult, enrol
from calibration.heads import apply_score, knn_only, score_members
from calibration.policy import ThresholdPolicy
from calibration.vetting import Outlier, outlier_clips
from edge_agent.scoring.bands import profile as band_profile
from edge_agent.scoring.bank import MemoryBank
from edge_agent.scoring.heads import REGISTRY

MIN_WINDOWS = 5


@dataclass(frozen=True)
class CalibrationRequest:
    """What to enrol and how. Audio: ``paths`` (WAV files or folders) or ``recording`` (mono at the
    model's rate, cut into chunks that act as clips)."""

    machine: str
    paths: tuple[Path, ...] = ()
    recording: Optional[np.ndarray] = None
    domain: Optional[str] = None  # None: from the file names (DCASE), else "source"
    channel: Union[int, str] = "mix"
    hop_seconds: float = 1.0
    policy: ThresholdPolicy = field(default_factory=ThresholdPolicy)
    score: Optional[str] = None  # score head(s); None: the bundle's own
    class_name: Optional[str] = None
    replace: bool = False
    centres: int = 16
    keep_source_samples: bool = False
    compact_above: int = 20000  # more bank entries than this: k-NN on a PCA (0: always exact)
    compact_dim: int = 64
    k: int = 1
    normalise_domains: bool = False
    keep_outliers: bool = False
    find_outliers: bool = True  # False: no search at all (evaluation keeps and reports no outliers)
    heard: frozenset[str] = frozenset()  # clips (or chunks) the model learnt besides its bundle's list (--adapt)
    progress: bool = True


@dataclass
class Calibration:
    """A new bank (``result.bank``) and what went into it."""

    result: EnrolResult
    skipped: list[tuple[Path, str]]
    outliers: list[tuple[str, Outlier]]

    @property
    def bank(self) -> MemoryBank:
        return self.result.bank


def calibrate(req: CalibrationRequest, engine, existing: Optional[MemoryBank] = None) -> Calibration:
    """Enrol ``req``'s audio. ``existing``: the machine's current bank, which the new windows join
    unless ``req.replace``."""
    bundle = engine.bundle
    fe = bundle.frontend
    hop_samples = max(1, int(round(req.hop_seconds * fe.sample_rate)))
    members = score_members(bundle, req.score, req.class_name)
    outputs: dict[str, list[dict]] = {}
    levels: list = []
    bands: list = []  # third-octave levels of every enrolled window (alarms explain against them)
    fingerprints: dict[str, str] = {}  # clip id -> fingerprint (a live recording has none)
    keep_outputs = None if knn_only(members) else outputs
    if req.paths:
        for p in req.paths:
            if not Path(p).exists():
                raise CalibrationError(f"--from {p}: no such file or folder")
        per_domain, skipped = embed_files(
            req.paths,
            engine,
            fe,
            hop_samples,
            req.channel,
            req.domain,
            f"enrolling {req.machine}",
            progress=req.progress,
            outputs_out=keep_outputs,
            levels_out=levels,
            fingerprints_out=fingerprints,
            bands_out=bands,
        )
    elif req.recording is not None:
        per_domain, skipped = embed_recording(
            req.recording, engine, hop_samples, req.domain or "source", keep_outputs, levels, bands
        )
    else:
        raise CalibrationError("nothing to enrol: give WAV files or a recording")
    outliers = exclude_outliers(per_domain, outputs, req.keep_outliers) if req.find_outliers else []
    n_windows = sum(len(g) for _, g in per_domain.values())
    if n_windows < MIN_WINDOWS:
        raise CalibrationError(
            f"only {n_windows} usable windows of {fe.window_seconds:g} s (need at least {MIN_WINDOWS}); give more "
            f"normal audio (e.g. --seconds {int(MIN_WINDOWS * req.hop_seconds + fe.window_seconds) + 1}) or fix the "
            "clips listed above",
            skipped,  # for the caller to list before the error
            outliers,
        )
    if existing is not None and not req.replace:
        existing.check_model(bundle.sha256, f"of machine {req.machine}")
    else:
        existing = None
    enr = to_enrolments(per_domain)
    trained_on = bundle.trained_on()
    heard = frozenset(g for g, fp in fingerprints.items() if fp in trained_on) | req.heard
    if all(REGISTRY[m["kind"]].model_free for m in members):
        heard = frozenset()  # the model's training cannot flatter a score that does not use the model
    try:
        res = enrol(
            bundle.sha256,
            enr.get("source"),
            enr.get("target"),
            existing=existing,
            replace=req.replace,
            n_centres=req.centres,
            keep_source_samples=req.keep_source_samples,
            compact_above=req.compact_above,
            compact_dim=req.compact_dim,
            k=req.k,
            normalise_domains=req.normalise_domains,
            policy=req.policy,
            heard=heard,
            model_name=bundle.name,
            model_version=bundle.version,
        )
    except ValueError as e:
        raise CalibrationError(str(e)) from None
    apply_score(res, members, outputs, req.policy, existing is None, bundle.embeddings_per_window)
    res.bank.meta["skipped_clips"] = len(skipped)
    prof = band_profile(np.concatenate(bands), fe.sample_rate) if bands else None
    if prof is not None or existing is None:  # a later enrolment without audio keeps the earlier profile
        res.bank.meta["bands"] = prof
    elif existing.meta.get("bands"):
        res.bank.meta["bands"] = existing.meta["bands"]
    res.bank.meta["levels_dbfs"] = level_range(
        levels, existing.meta.get("levels_dbfs") if existing is not None else None
    )
    if req.find_outliers:
        res.bank.meta["outlier_clips"] = {"kept" if req.keep_outliers else "excluded": [o.clip for _, o in outliers]}
    return Calibration(res, skipped, outliers)


def enrol_paths(
    paths,
    engine,
    hop_samples: int,
    channel="mix",
    progress: bool = False,
    score: Optional[str] = None,
    class_name: Optional[str] = None,
    policy: Optional[ThresholdPolicy] = None,
    n_centres: int = 16,
    k: int = 1,
    **enrol_args,
) -> tuple[EnrolResult, list[tuple[Path, str]]]:
    """Vet, embed and enrol normal clips into a new bank with the asked score head, every clip kept
    (as evaluation and the benchmarks need). Returns (EnrolResult, skipped clips)."""
    fe = engine.bundle.frontend
    req = CalibrationRequest(
        machine="evaluation",
        paths=tuple(paths),
        channel=channel,
        hop_seconds=hop_samples / fe.sample_rate,
        policy=policy or ThresholdPolicy(),
        score=score,
        class_name=class_name,
        replace=True,
        centres=n_centres,
        k=k,
        find_outliers=False,
        progress=progress,
        **enrol_args,
    )
    c = calibrate(req, engine)
    return c.result, c.skipped


def level_range(levels: list, existing: Optional[dict] = None) -> Optional[dict]:
    """The enrolled windows' level range (dBFS), joined with an earlier enrolment's: the runtime
    calls a window far below ``low`` a stopped machine (``off``) rather than scoring it."""
    x = np.concatenate(levels) if levels else np.zeros(0)
    if not len(x):
        return existing
    r = {
        "low": float(np.percentile(x, 1)),
        "median": float(np.median(x)),
        "high": float(np.percentile(x, 99)),
        "windows": int(len(x)),
    }
    if existing:
        r = {
            "low": min(r["low"], existing["low"]),
            "median": r["median"],
            "high": max(r["high"], existing["high"]),
            "windows": r["windows"] + int(existing.get("windows", 0)),
        }
    return r


def exclude_outliers(
    per_domain: dict[str, tuple[list, list]], outputs: dict[str, list[dict]], keep: bool
) -> list[tuple[str, Outlier]]:
    """Find the clips of each domain that sound unlike the rest and, unless ``keep``, take them
    (embeddings and model outputs) out of the enrolment. Returns (domain, outlier) pairs."""
    found = []
    for d, (embs, groups) in list(per_domain.items()):
        outl = outlier_clips(np.concatenate(embs), np.array(groups))
        found += [(d, o) for o in outl]
        if keep or not outl:
            continue
        bad = {o.clip for o in outl}
        starts = np.cumsum([0] + [len(e) for e in embs[:-1]])  # each clip's first window
        kept = [i for i, st in enumerate(starts) if groups[st] not in bad]
        per_domain[d] = ([embs[i] for i in kept], [g for g in groups if g not in bad])
        if d in outputs:
            outputs[d] = [outputs[d][i] for i in kept]
    return found
