"""Enrolment: embeddings of normal sound -> a machine's memory bank with its alarm threshold.

Source domain: k-means centres of the embeddings (16 by default, the published choice), plus all
samples if asked. Target domain: every sample (few-shot). Thresholds come from leave-one-clip-out
scores: every enrolled window is scored against a bank built without the clip it came from (the
k-means centres are refitted per fold), so the threshold reflects sound the bank has not seen.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from calibration.policy import ThresholdPolicy
from calibration.threshold import (
    GammaFit,
    alarm_rate_per_day,
    block_maxima,
    fit_block_maxima,
    fit_gamma,
    rate_interval,
    support_note,
    threshold_from_alarm_rate,
    threshold_from_percentile,
)
from edge_agent import __version__
from edge_agent.scoring.bank import MemoryBank, Projection, bank_distance, combine_domains, fit_projection
from edge_agent.scoring.detector import warm_up_windows
from edge_agent.scoring.heads import ensemble_spec

MAX_FOLDS = 10
MIN_BLOCKS = 3  # held-out clips needed to estimate the alarm rate from sequences


@dataclass
class Enrolment:
    """Embeddings of one domain with the clip (or recording chunk) each window came from."""

    embeddings: np.ndarray  # (n, D)
    groups: np.ndarray  # (n,) clip ids
    domain: str


@dataclass
class EnrolResult:
    bank: MemoryBank
    loo_scores: np.ndarray
    loo_domains: np.ndarray
    fit: GammaFit
    expected_alarms_per_day: float
    notes: list[str] = field(default_factory=list)
    loo_groups: Optional[np.ndarray] = None  # the clip of each leave-one-out score, windows in time order
    # which leave-one-out scores the threshold was fitted on (None: all); clips the model was trained
    # on are left out when enough others remain
    fitted: Optional[np.ndarray] = None

    def fit_scores(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """The leave-one-out scores and clips a threshold is fitted on."""
        if self.fitted is None:
            return self.loo_scores, self.loo_groups
        return self.loo_scores[self.fitted], None if self.loo_groups is None else self.loo_groups[self.fitted]


def pick_threshold(scores: np.ndarray, policy: ThresholdPolicy, groups: Optional[np.ndarray] = None):
    """Gamma fit of normal scores, the threshold the policy asks for, its rule, the expected false
    alarms per day and how that estimate was made: (fit, threshold, rule, alarms/day, rate info).

    With a budget and each score's clip (``groups``, windows in time order), the rate comes from the
    decision rule run over the clips' score sequences (``threshold.block_maxima``); without groups
    (score heads fitted on pooled windows) it falls back to windows taken as independent."""
    fit = fit_gamma(scores)
    budget = policy.percentile is None and policy.false_alarms_per_day is not None
    if budget:
        thr, rule = None, {"rule": "false_alarms_per_day", "value": policy.false_alarms_per_day}
    else:
        q = policy.percentile if policy.percentile is not None else 0.90
        thr, rule = threshold_from_percentile(fit, q), {"rule": "percentile", "value": q}
    blocks = len(np.unique(groups)) if groups is not None else 0
    maxima, block_hours, why = None, 0.0, ""
    need = policy.raise_after + warm_up_windows(policy.smooth_windows)  # windows the rule needs after a start
    if groups is not None and not policy.independent_windows:
        if blocks < MIN_BLOCKS:
            why = f"only {blocks} clip(s) or recording chunk(s): too few"
        else:
            maxima, block_hours, audio_hours = block_maxima(
                scores,
                groups,
                policy.hop_seconds,
                policy.raise_after,
                policy.of_last,
                policy.smooth_windows,
                policy.smooth,
            )
            if len(maxima) < MIN_BLOCKS or np.ptp(maxima) <= 0:
                why = f"{len(maxima)} clip(s) of {need} windows or more (with distinct peaks): too few"
                maxima = None
    if maxima is None:
        if thr is None:
            thr = threshold_from_alarm_rate(
                fit, policy.false_alarms_per_day, policy.hop_seconds, policy.raise_after, policy.of_last
            )
        rate = alarm_rate_per_day(fit.sf(thr), policy.hop_seconds, policy.raise_after, policy.of_last)
        info = {"method": "windows taken as independent"}
        if why:
            info["note"] = (
                f"{why} to run the alarm rule over held-out audio, so the rate takes windows as independent and is "
                f"optimistic; enrol at least 3 clips of {need} windows or more"
            )
        return fit, float(thr), rule, rate, info
    rfit = fit_block_maxima(maxima, block_hours, audio_hours=audio_hours)
    if thr is None:
        thr = rfit.threshold(policy.false_alarms_per_day / 24)
    per_hour = rfit.rate_per_hour(thr)
    lo, hi = rate_interval(maxima, block_hours, thr, shape=rfit.shape)
    info = {
        "method": "decision rule over leave-one-clip-out sequences, extreme-value tail",
        "fit": rfit.to_dict(),
        "per_day_ci": [24 * lo, 24 * hi],
        "hours": rfit.hours,
        "clips": rfit.blocks,
        "note": support_note(rfit, policy.false_alarms_per_day / 24) if budget else "",
    }
    return fit, float(thr), rule, 24 * per_hour, info


def apply_threshold(
    res: "EnrolResult", scores: np.ndarray, policy: ThresholdPolicy, groups: Optional[np.ndarray] = None
) -> None:
    """Fit the threshold on ``scores`` (each window's clip in ``groups``, for the alarm rule) and
    put it in the bank with how it was fitted."""
    fit, thr, rule, rate, info = pick_threshold(scores, policy, groups)
    res.bank.threshold = float(thr)
    how = {"fit": fit.to_dict(), "threshold_rule": {**rule, **policy.rule()}, "expected_alarms_per_day": rate}
    res.bank.meta.update(how, alarm_rate=info)
    res.fit, res.expected_alarms_per_day = fit, rate


def use_heads(
    res: "EnrolResult",
    members: list[dict],
    member_scores: list[np.ndarray],
    domains: np.ndarray,
    policy: ThresholdPolicy,
    groups: Optional[np.ndarray] = None,
) -> None:
    """Switch a fresh bank to a score head other than the plain k-NN (``edge_agent.scoring.heads``): one
    head, or an ensemble whose members are z-normalised with their enrolment statistics. The
    threshold is fitted on the enrolled windows' scores (leave-one-out k-NN and indicator scores
    for those members), with the alarm rule run over each clip's sequence when ``groups`` (each
    window's clip, in time order) are given."""
    if len(members) == 1:
        spec, combined = members[0], np.asarray(member_scores[0], np.float64)
    else:
        spec = ensemble_spec(members, member_scores)
        combined = np.mean(
            [(np.asarray(s) - m["mean"]) / m["std"] for s, m in zip(member_scores, spec["members"])], axis=0
        )
    # clips the model was trained on are left out of the fit here too, when they line up
    fitted = res.fitted if res.fitted is not None and len(res.fitted) == len(combined) else slice(None)
    apply_threshold(res, combined[fitted], policy, None if groups is None else np.asarray(groups)[fitted])
    res.bank.meta["score"] = spec
    res.loo_scores, res.loo_domains = combined, domains
    res.loo_groups = None if groups is None else np.asarray(groups)
    if isinstance(fitted, slice):  # the selection did not line up with these windows
        res.fitted = None


def kmeans_centres(emb: np.ndarray, n_centres: int, seed: int = 0) -> np.ndarray:
    """L2-normalised k-means centres (fewer when there are fewer distinct embeddings)."""
    from sklearn.cluster import KMeans

    n = min(n_centres, len(np.unique(np.round(emb, 6), axis=0)))
    if n >= len(emb):
        return emb.copy()
    c = KMeans(n, n_init=10, random_state=seed).fit(emb).cluster_centers_
    return (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _entries(
    source: Optional[np.ndarray], target: Optional[np.ndarray], n_centres: int, keep_source_samples: bool, seed: int
):
    emb, dom, kind = [], [], []
    if source is not None and len(source):
        c = kmeans_centres(source, n_centres, seed)
        emb += [c]
        dom += ["source"] * len(c)
        kind += ["centre"] * len(c)
        if keep_source_samples:
            emb += [source]
            dom += ["source"] * len(source)
            kind += ["sample"] * len(source)
    if target is not None and len(target):
        emb += [target]
        dom += ["target"] * len(target)
        kind += ["sample"] * len(target)
    d = emb[0].shape[1] if emb else 0
    return (
        (np.concatenate(emb).astype(np.float32) if emb else np.zeros((0, d), np.float32)),
        np.array(dom),
        np.array(kind),
    )


def _loo_distances(
    source: Optional[Enrolment],
    target: Optional[Enrolment],
    n_centres: int,
    keep_source_samples: bool,
    k: int,
    seed: int,
    projection: Optional[Projection] = None,
):
    """Leave-one-clip-out k-NN distances of every enrolled window, to each domain's entries (in the
    bank's projection when it has one, so the threshold is fitted on the scores the runtime gives)."""
    rows = [e for e in (source, target) if e is not None and len(e.embeddings)]
    all_emb = np.concatenate([e.embeddings for e in rows])
    all_dom = np.concatenate([[e.domain] * len(e.embeddings) for e in rows])
    all_grp = np.concatenate([[f"{e.domain}:{g}" for g in e.groups] for e in rows])
    uniq = np.unique(all_grp)
    n_folds = min(MAX_FOLDS, len(uniq))
    if n_folds < 2:
        raise ValueError("need enrolment audio from at least 2 clips (or 2 recording chunks) to fit a threshold")
    rng = np.random.default_rng(seed)
    fold_of_group = dict(zip(rng.permutation(uniq), np.arange(len(uniq)) % n_folds))
    fold = np.array([fold_of_group[g] for g in all_grp])
    dists = {d: np.full(len(all_emb), np.nan, np.float32) for d in ("source", "target")}
    dists["groups"] = all_grp
    for f in range(n_folds):
        held, kept = fold == f, fold != f
        s = all_emb[kept & (all_dom == "source")]
        t = all_emb[kept & (all_dom == "target")]
        emb, dom, _ = _entries(s, t, n_centres, keep_source_samples, seed)
        for d in ("source", "target"):
            m = dom == d
            if m.any():
                dists[d][held] = bank_distance(all_emb[held], emb[m], k, projection)
    return all_emb, all_dom, dists


def enrol(
    model_sha256: str,
    source: Optional[Enrolment] = None,
    target: Optional[Enrolment] = None,
    existing: Optional[MemoryBank] = None,
    replace: bool = False,
    n_centres: int = 16,
    keep_source_samples: bool = False,
    k: int = 1,
    normalise_domains: bool = False,
    policy: ThresholdPolicy = ThresholdPolicy(),
    heard: frozenset[str] = frozenset(),
    model_name: str = "",
    model_version: str = "",
    seed: int = 0,
    compact_above: int = 20000,
    compact_dim: int = 64,
) -> EnrolResult:
    """Build (or extend) a bank and fit its threshold.

    Enrolment embeddings of earlier calibrations are kept in the bank's ``enrolled_*`` arrays so
    that a later target enrolment can refit the threshold on everything the bank knows. A bank of
    more than ``compact_above`` entries scores on a ``compact_dim``-d PCA of them (0 never).
    ``heard``: the clips (group ids of ``source``/``target``) that the model was trained on."""
    notes = []
    heard = set(heard)
    if existing is not None and not replace:
        # this enrolment's clips join an existing bank under a version prefix when a domain already
        # has clips there; a clip id heard before stays heard (same audio, same model)
        heard |= {f"v{existing.version + 1}:{g}" for g in heard} | set(existing.meta.get("heard_in_training", []))
    if existing is not None and not replace:
        existing.check_model(model_sha256)
        prev_src = Enrolment(*existing.enrolled["source"], "source") if "source" in existing.enrolled else None
        prev_tgt = Enrolment(*existing.enrolled["target"], "target") if "target" in existing.enrolled else None
        if source is None and prev_src is not None:
            source = prev_src
        elif source is not None and prev_src is not None:
            source = Enrolment(
                np.concatenate([prev_src.embeddings, source.embeddings]),
                np.concatenate([prev_src.groups, np.char.add(f"v{existing.version + 1}:", source.groups.astype(str))]),
                "source",
            )
        if target is None and prev_tgt is not None:
            target = prev_tgt
        elif target is not None and prev_tgt is not None:
            target = Enrolment(
                np.concatenate([prev_tgt.embeddings, target.embeddings]),
                np.concatenate([prev_tgt.groups, np.char.add(f"v{existing.version + 1}:", target.groups.astype(str))]),
                "target",
            )
        notes.append("added to the existing bank (use --replace to start over)")
    if source is None and target is None:
        raise ValueError("nothing to enrol")
    emb, dom, kind = _entries(
        source.embeddings if source else None,
        target.embeddings if target else None,
        n_centres,
        keep_source_samples,
        seed,
    )
    projection = None
    if compact_above and len(emb) > compact_above and 0 < compact_dim < emb.shape[1]:
        projection = fit_projection(emb, compact_dim)
        notes.append(
            f"{len(emb)} bank entries: k-NN runs on a {compact_dim}-d projection of them (--compact-above 0 for exact)"
        )
    all_emb, all_dom, dists = _loo_distances(source, target, n_centres, keep_source_samples, k, seed, projection)
    all_grp = dists.pop("groups")
    stats: dict[str, tuple[float, float]] = {}
    for d in ("source", "target"):
        own = dists[d][all_dom == d]
        own = own[np.isfinite(own)]
        if len(own) >= 2:
            stats[d] = (float(own.mean()), float(own.std() + 1e-6))
    if normalise_domains and len(stats) < 2:
        notes.append("per-domain normalisation needs enrolment in both domains; using plain distances")
        normalise_domains = False
    if normalise_domains:
        loo = combine_domains({d: np.where(np.isnan(v), np.inf, v) for d, v in dists.items() if d in stats}, stats)
    else:
        loo = np.nanmin(np.stack([dists["source"], dists["target"]]), axis=0)
    finite = np.isfinite(loo)
    loo, all_grp = loo[finite], all_grp[finite]
    clips = np.char.partition(all_grp.astype(str), ":")[:, 2]  # "domain:clip" -> clip
    fitted, overlap = fit_selection(clips, heard)
    if overlap.get("note"):
        notes.append(overlap["note"])
    fit, thr, rule, rate, info = pick_threshold(loo[fitted], policy, all_grp[fitted])
    version = (existing.version if existing is not None else 0) + 1
    bank = MemoryBank(
        embeddings=emb,
        domains=dom,
        kinds=kind,
        model_sha256=model_sha256,
        model_name=model_name,
        model_version=model_version,
        threshold=float(thr),
        k=k,
        normalise_domains=normalise_domains,
        domain_stats=stats,
        meta={
            "version": version,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "agent_version": __version__,
            "fit": fit.to_dict(),
            "threshold_rule": {**rule, **policy.rule()},
            "expected_alarms_per_day": rate,
            "alarm_rate": info,
            "enrolled_windows": {d: int(np.sum(all_dom == d)) for d in ("source", "target")},
            "enrolled_clips": {e.domain: int(len(np.unique(e.groups))) for e in (source, target) if e is not None},
            "n_centres": n_centres,
            "keep_source_samples": keep_source_samples,
            "projection_dim": projection.dim if projection is not None else None,
            "heard_in_training": sorted(heard & set(clips)),
            "training_overlap": {k: v for k, v in overlap.items() if k != "note"} or None,
        },
        enrolled={
            e.domain: (e.embeddings, np.asarray(e.groups).astype(str)) for e in (source, target) if e is not None
        },
        projection=projection,
    )
    return EnrolResult(bank, loo, all_dom[finite], fit, rate, notes, all_grp, None if fitted.all() else fitted)


MIN_FRESH_CLIPS = 3  # clips the model has not heard, to fit a threshold on them alone


def fit_selection(clips: np.ndarray, heard: set[str]) -> tuple[np.ndarray, dict]:
    """Which leave-one-out scores (``clips``: the clip of each) to fit the threshold on, and what
    to say about it. A network embeds the clips it was trained on closer together than new sound of
    the same machine (valve: held-out windows of trained-on clips score a quarter of what unseen
    normal clips score; training-free features show no such gap), so a threshold fitted on them
    is too low and its false-alarm estimate far too optimistic. They stay in the bank; the threshold
    is fitted on the other clips when there are enough of them."""
    is_heard = np.isin(clips, sorted(heard)) if heard else np.zeros(len(clips), bool)
    n_heard, n_fresh = len(np.unique(clips[is_heard])), len(np.unique(clips[~is_heard]))
    if not n_heard:
        return np.ones(len(clips), bool), {}
    info = {"heard_clips": n_heard, "clips": n_heard + n_fresh}
    why = (
        "held-out scores of clips a model has learnt understate how far new normal sound lies, so a threshold "
        "fitted on them is too low and its false-alarm estimate too optimistic"
    )
    if n_fresh >= MIN_FRESH_CLIPS:
        info["fitted_on_clips"] = n_fresh
        info["note"] = (
            f"{n_heard} of {n_heard + n_fresh} enrolment clips were used to train the model: they stay in the bank, "
            f"but the threshold is fitted on the {n_fresh} it has not heard ({why})"
        )
        return ~is_heard, info
    info["fitted_on_clips"] = n_heard + n_fresh
    info["warning"] = (
        f"{n_heard} of {n_heard + n_fresh} enrolment clips were used to train the model, too many to fit the "
        f"threshold without them: {why}; expect more false alarms than estimated. Enrol recordings the model "
        "has not heard (at least 3 clips), or let the agent fit the threshold on field audio with a learning period"
    )
    return np.ones(len(clips), bool), info
