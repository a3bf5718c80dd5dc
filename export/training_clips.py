"""Record which clips an existing bundle was trained on, for bundles exported before training wrote
the list itself (``edge_agent.audio.fingerprint``; calibrate uses it to tell when it is asked to
enrol clips the model has learnt).

The clips are found again with the selection recorded in the manifest (data folders, excluded test
folders) and checked against the recorded counts per machine folder. A folder that has changed
since (more or fewer clips than were trained on) keeps only its training-split clips, which training
always uses; the others cannot be told apart and are counted as not identified in the manifest. A
distilled model also lists what its teacher learnt.

    python -m export.training_clips edge_agent/model/builtin/default [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from edge_agent.audio.fingerprint import audio_fingerprint
from edge_agent.audio.wavio import read_wav
from edge_agent.errors import UserError
from edge_agent.model.bundle import Bundle, write_manifest, write_training_clips
from export.dataindex import select_clips


def identify(training: dict, data: Optional[Sequence[str | Path]] = None) -> tuple[list[str], dict[str, int]]:
    """The fingerprints of the recorded training clips that can be identified, and per machine folder
    how many recorded clips could not be."""
    args, recorded = training.get("args", {}), training.get("data", {}).get("machines", {})
    roots = list(data or args.get("data") or [])
    if not roots or not recorded:
        raise ValueError("the manifest records no training data folders or counts; give --data and re-export instead")
    clips, _ = select_clips(
        roots,
        args.get("exclude_test_of", []),
        args.get("include_test_normals", True),
        args.get("exclude", []),
        float(args.get("hold_out", 0.0)),
    )
    sections = {tuple(j.split("|")[:2]) for j in training.get("joint_classes", [])}
    clips = [c for c in clips if not sections or (c.group, c.section) in sections]
    found = Counter(c.group for c in clips)
    keep, missing = [], {}
    for group, n in sorted(recorded.items()):
        mine = [c for c in clips if c.group == group]
        if found[group] != n:  # the folder changed since: only its training split is certain
            mine = [c for c in mine if c.split == "train"] if sum(c.split == "train" for c in mine) <= n else []
            missing[group] = n - len(mine)
        keep += mine
    return [audio_fingerprint(*read_wav(c.path)) for c in keep], missing


def record(bundle_dir: str | Path, data: Optional[Sequence[str | Path]] = None, log=print) -> dict:
    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    fps, missing = identify(m.training, data)
    teacher = (m.training.get("distillation") or {}).get("teacher")
    if teacher:
        t = Bundle.load(teacher["name"])
        if t.sha256 != teacher["sha256"]:
            raise ValueError(
                f"teacher {teacher['name']} is not the bundle this model was distilled from (sha256 differs)"
            )
        if not t.trained_on():
            raise ValueError(f"record the teacher's clips first: python -m export.training_clips {t.path}")
        fps += sorted(t.trained_on())
    training = {k: v for k, v in m.training.items() if not k.startswith("clips_")}
    training = write_training_clips(bundle.path, fps, training)
    training["clips_not_identified"] = missing
    write_manifest(bundle.path, m.model_copy(update={"training": training}))
    log(
        f"{bundle.path}: {len(set(fps))} training clips listed"
        + (f"; not identified: {', '.join(f'{g} {n}' for g, n in missing.items())}" if missing else "")
    )
    return {"listed": len(set(fps)), "not_identified": missing}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", help="bundle folders (a distilled model after its teacher)")
    p.add_argument("--data", nargs="+", help="the training data folders (default: those the manifest records)")
    a = p.parse_args(argv)
    for b in a.bundles:
        try:
            record(b, a.data)
        except (UserError, ValueError) as e:
            print(f"error: {b}: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
