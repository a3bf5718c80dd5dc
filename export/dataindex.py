"""Training index: normal clips from one or more dataset folders, with the class labels the
recipes train on (joint class = machine type x section x attribute combination, and machine type).

Machines whose clips carry no attributes get k-means pseudo-attributes computed on log-mel
statistics of the clips (training-free features), so that the joint classification task still has
structure to learn for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from calibration.dataset import ClipLabel, DatasetIndex, index_dataset
from edge_agent.audio.convert import prepare
from edge_agent.audio.fingerprint import audio_fingerprint
from edge_agent.audio.wavio import read_wav
from edge_agent.model.frontend import log_mel


@dataclass
class TrainItem:
    label: ClipLabel
    audio: np.ndarray  # mono float32 at the model's rate
    joint: str  # joint class name
    machine: str  # machine type class name
    fingerprint: str = ""  # of the audio as read (edge_agent.audio.fingerprint)


@dataclass
class TrainSet:
    items: list[TrainItem]
    joint_classes: list[str]
    machine_classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def section_classes(self) -> list[str]:
        return sorted({self.section_of(it) for it in self.items})

    @staticmethod
    def section_of(it: "TrainItem") -> str:
        return f"{it.label.group}|{it.label.section}"

    def classes(self, target: str) -> list[str]:
        return {"joint": self.joint_classes, "machine": self.machine_classes, "section": self.section_classes}[target]

    def class_of(self, it: "TrainItem", target: str) -> str:
        return {"joint": it.joint, "machine": it.machine, "section": self.section_of(it)}[target]

    def joint_ids(self) -> np.ndarray:
        m = {c: i for i, c in enumerate(self.joint_classes)}
        return np.array([m[it.joint] for it in self.items], dtype=np.int64)

    def machine_ids(self) -> np.ndarray:
        m = {c: i for i, c in enumerate(self.machine_classes)}
        return np.array([m[it.machine] for it in self.items], dtype=np.int64)

    def domains(self) -> np.ndarray:
        return np.array([it.label.domain == "target" for it in self.items], dtype=bool)

    def summary(self) -> dict:
        from collections import Counter

        groups = Counter(it.label.group for it in self.items)
        doms = Counter(it.label.domain for it in self.items)
        return {
            "clips": len(self.items),
            "seconds": round(float(sum(len(it.audio) for it in self.items)) / 16000.0, 1) if self.items else 0.0,
            "machines": dict(sorted(groups.items())),
            "domains": dict(doms),
            "joint_classes": len(self.joint_classes),
            "machine_classes": self.machine_classes,
            "skipped": len(self.skipped),
        }


def clip_stats(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel mean and standard deviation per band: the training-free clip descriptor."""
    lm = log_mel(x, sample_rate, 1024, 512, 128)
    return np.concatenate([lm.mean(axis=0), lm.std(axis=0)])


def pseudo_attributes(audios: Sequence[np.ndarray], sample_rate: int, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    feats = np.stack([clip_stats(a, sample_rate) for a in audios])
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    k = max(1, min(n_clusters, len(audios) // 2))
    if k == 1:
        return np.zeros(len(audios), dtype=int)
    return KMeans(k, n_init=10, random_state=seed).fit_predict(feats)


def _names(group: str, names: Sequence[str]) -> bool:
    return any(group == e or group.endswith("/" + e) for e in names)


def select_clips(
    roots: Sequence[str | Path],
    exclude_test_of: Sequence[str] = (),
    include_test_normals: bool = True,
    exclude: Sequence[str] = (),
    hold_out: float = 0.0,
) -> tuple[list[ClipLabel], list[tuple[Path, str]]]:
    """The normal clips under ``roots`` that training uses, and the files skipped. Test-split normals
    are used too (``include_test_normals``) except for machine folders named in ``exclude_test_of``
    (the benchmarks being evaluated); machine folders named in ``exclude`` are left out altogether.
    ``hold_out``: about this fraction of each machine folder's clips (every n-th by name) is kept out
    of training, so that calibrate can fit thresholds on clips of the machine the model has not heard."""
    clips: list[ClipLabel] = []
    skipped: list[tuple[Path, str]] = []
    for root in roots:
        idx: DatasetIndex = index_dataset(root)
        skipped += idx.skipped
        for c in idx.clips:
            if c.condition != "normal" or _names(c.group, exclude):
                continue
            if c.split == "test" and (not include_test_normals or _names(c.group, exclude_test_of)):
                continue
            clips.append(c)
    if hold_out > 0:
        every = max(2, round(1 / hold_out))
        by_group: dict[str, list[ClipLabel]] = {}
        for c in sorted(clips, key=lambda c: str(c.path)):
            by_group.setdefault(c.group, []).append(c)
        held = {id(c) for g in by_group.values() for i, c in enumerate(g) if i % every == every - 1}
        clips = [c for c in clips if id(c) not in held]
    return clips, skipped


def build_trainset(
    roots: Sequence[str | Path],
    sample_rate: int = 16000,
    exclude_test_of: Sequence[str] = (),
    include_test_normals: bool = True,
    pseudo_k: int = 4,
    seed: int = 0,
    log=print,
    exclude: Sequence[str] = (),
    hold_out: float = 0.0,
) -> TrainSet:
    """The clips of ``select_clips``, read and labelled for training."""
    clips, skipped = select_clips(roots, exclude_test_of, include_test_normals, exclude, hold_out)
    items: list[TrainItem] = []
    for c in clips:
        x, sr = read_wav(c.path)
        items.append(TrainItem(c, prepare(x, sr, sample_rate), "", c.machine, audio_fingerprint(x, sr)))
    # Joint class: machine folder x section x attribute combination; pseudo-attributes where none.
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, it in enumerate(items):
        by_key.setdefault((it.label.group, it.label.section), []).append(i)
    for (group, section), ids in by_key.items():
        attrs = {items[i].label.attributes for i in ids}
        if attrs == {()}:
            clusters = pseudo_attributes([items[i].audio for i in ids], sample_rate, pseudo_k, seed)
            for i, k in zip(ids, clusters):
                items[i].joint = f"{group}|{section}|pseudo{k}"
        else:
            for i in ids:
                items[i].joint = f"{group}|{section}|{items[i].label.attribute_string}"
    ts = TrainSet(items, sorted({it.joint for it in items}), sorted({it.machine for it in items}), skipped)
    for p, why in skipped:
        log(f"skipped {p}: {why}")
    return ts
