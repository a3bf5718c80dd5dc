"""Score heads for a calibration: which heads (``--score``, default: the bundle's own) with their
class resolved, and the threshold refitted on the enrolled windows' scores under them."""

from __future__ import annotations

from typing import Optional

import numpy as np

from calibration.embed import CalibrationError
from calibration.enrol import EnrolResult, use_heads
from calibration.policy import ThresholdPolicy
from edge_agent.scoring.heads import REGISTRY, Enrolment, ScoreError, head, parse_score


def resolve_class(bundle, head: str, name: Optional[str]) -> tuple[str, int]:
    """The class of a machine the model was trained on (``group|section``) for a head that needs one."""
    head_spec = bundle.manifest.all_heads().get(head)
    classes = head_spec.classes if head_spec else []
    if head == "classifier" and len(classes) < 2:
        raise CalibrationError(
            f"--score classifier: model {bundle.name} was trained on one class only, so its classifier score is "
            "always 0; use --score knn"
        )
    if name is None:
        raise CalibrationError(
            f"--score {head} needs the machine's class in the model: --class NAME, one of {', '.join(classes)}; "
            "for a machine the model was not trained on, use a head without a class (--score knn, or rec-kld for clvae)"
        )
    if name not in classes:
        raise CalibrationError(f"--class {name!r} is not one of the model's classes: {', '.join(classes)}")
    return name, classes.index(name)


def score_members(bundle, score: Optional[str], class_name: Optional[str] = None) -> list[dict]:
    """The score heads a calibration asks for (``--score``, default: the bundle's own), checked
    against the bundle and with their class resolved."""
    heads = bundle.manifest.all_heads()
    try:
        kinds = parse_score(score or bundle.manifest.score.head)
    except ScoreError as e:
        raise CalibrationError(str(e)) from None
    members = []
    for kind in kinds:
        if REGISTRY[kind].model_free:
            members.append({"kind": kind})  # what it needs comes from the enrolment (apply_score)
            continue
        if kind not in heads:
            raise CalibrationError(
                f"--score {kind}: model {bundle.name} has no {kind} head (it has: {', '.join(heads)})"
            )
        m: dict = {"kind": kind}
        if REGISTRY[kind].needs_class:
            m["class"], m["class_index"] = resolve_class(bundle, kind, class_name)
        if heads[kind].weight is not None:
            m["weight"] = float(heads[kind].weight)
        members.append(m)
    return members


def knn_only(members: list[dict]) -> bool:
    """The plain k-NN needs nothing but the bank; other heads need the model's outputs per window."""
    return [m["kind"] for m in members] == ["knn"]


def apply_score(
    res: EnrolResult,
    members: list[dict],
    outputs: dict[str, list[dict]],
    policy: ThresholdPolicy,
    fresh: bool,
    per_window: int,
) -> None:
    """Give a new bank the asked score head(s) and refit its threshold on the enrolled windows'
    scores under that head. ``outputs``: this enrolment's model outputs per domain, in enrolment order."""
    if knn_only(members):
        return
    order = [d for d in ("source", "target") if outputs.get(d)]
    keys = outputs[order[0]][0].keys()
    outs = {k: np.concatenate([o[k] for d in order for o in outputs[d]]) for k in keys}
    domains = np.concatenate([[d] * sum(len(o["embedding"]) for o in outputs[d]) for d in order])
    # each window's clip, so that the threshold fit runs the alarm rule over each clip's sequence
    groups = np.concatenate([[f"{d}:{i}"] * len(o["embedding"]) for d in order for i, o in enumerate(outputs[d])])
    # the k-NN's enrolment scores are its leave-one-clip-out distances, which line up with this
    # enrolment's windows only when the bank holds nothing else
    if any(m["kind"] == "knn" for m in members):
        if not fresh:
            raise CalibrationError("an ensemble with knn is fitted on a new bank only; add --replace")
        if per_window != 1 or len(res.loo_scores) != len(domains):
            raise CalibrationError("an ensemble with knn needs a model with one embedding per window")
    enrolment = Enrolment(outs, groups, res.loo_scores if fresh else None)
    scores = []
    for i, m in enumerate(members):  # each head fitted as its module says (heads/)
        try:
            members[i], s = head(m).fit(enrolment)
        except ScoreError as e:
            raise CalibrationError(str(e)) from None
        scores.append(s)
    if not fresh:
        res.notes.append(
            f"the {'+'.join(m['kind'] for m in members)} threshold is fitted on this enrolment's windows only"
        )
    try:
        use_heads(res, members, scores, domains, policy, groups)
    except ValueError as e:
        raise CalibrationError(f"--score: {e}") from None
