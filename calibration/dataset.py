"""Labels from file names, and an index of a dataset directory.

Understands the DCASE Task 2 layout ``<root>/<machine>/{train,test}/*.wav`` with DCASE 2020 names
(``normal_id_04_00000006.wav``), DCASE 2021-2024 names
(``section_00_source_train_normal_0001_<attr>_<value>...wav``, ``noAttribute``, and unlabelled
evaluation names ``section_00_0001.wav``), the MIMII folder layout
(``<machine>/id_00/{normal,abnormal}/00000000.wav``) and MIMII's flat names
(``fan_id_00_normal_00000000.wav``). It lives in the runtime package (no torch) because calibrate
and evaluate need it; the training index in ``export.dataindex`` is built on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edge_agent.audio.wavio import AudioFileError, iter_wavs, wav_info

SPLITS = ("train", "test", "supplemental")

_DCASE2021 = re.compile(
    r"^section_(?P<section>\d+)_(?P<domain>source|target)_(?P<split>train|test)_(?P<cond>normal|anomaly)_(?P<idx>\d+)(?:_(?P<attrs>.+))?$"
)
_DCASE2021_EVAL = re.compile(r"^section_(?P<section>\d+)_(?P<idx>\d+)$")
_DCASE2020 = re.compile(r"^(?P<cond>normal|anomaly)_id_(?P<id>\d+)_(?P<idx>\d+)$")
_DCASE2020_EVAL = re.compile(r"^id_(?P<id>\d+)_(?P<idx>\d+)$")
_MIMII_FLAT = re.compile(r"^(?P<machine>[A-Za-z]+)_id_(?P<id>\d+)_(?P<cond>normal|abnormal)_(?P<idx>\d+)$")
_MIMII_NUM = re.compile(r"^\d+$")


@dataclass(frozen=True)
class ClipLabel:
    path: Path
    machine: str  # machine type, e.g. "valve"
    section: str  # DCASE section ("00") or MIMII/2020 machine id ("id_04")
    domain: str  # "source", "target", or "unknown" (unlabelled evaluation clips)
    split: str  # "train", "test", "supplemental" or "unknown"
    condition: str  # "normal", "anomaly" or "unknown"
    attributes: tuple[tuple[str, str], ...] = ()
    scheme: str = "dcase2023"
    group: str = ""  # the machine directory relative to the indexed root, e.g. "dcase2023t2/valve"

    @property
    def attribute_dict(self) -> dict[str, str]:
        return dict(self.attributes)

    @property
    def attribute_string(self) -> str:
        return "_".join(f"{k}_{v}" for k, v in self.attributes) or "noAttribute"

    @property
    def is_anomaly(self) -> Optional[bool]:
        return None if self.condition == "unknown" else self.condition == "anomaly"


class LabelError(ValueError):
    """A file name that follows none of the known naming schemes."""


def parse_attributes(text: Optional[str]) -> tuple[tuple[str, str], ...]:
    """``pat_01`` -> (("pat", "01"),); ``car_C2_spd_31V_mic_1`` -> three pairs; ``noAttribute`` -> ()."""
    if not text or text == "noAttribute":
        return ()
    tokens = text.split("_")
    pairs = [(tokens[i], tokens[i + 1]) for i in range(0, len(tokens) - 1, 2)]
    if len(tokens) % 2:
        # An unpaired trailing token (seen in some DCASE 2021 names) is kept, not dropped.
        pairs.append(("tag", tokens[-1]))
    return tuple(pairs)


def parse_path(path: str | Path, root: Optional[str | Path] = None) -> ClipLabel:
    """Labels of one clip from its name and the folders around it; raises LabelError."""
    path = Path(path)
    stem, parent = path.stem, path.parent
    split = parent.name if parent.name in SPLITS else "unknown"
    machine_dir = parent.parent if split != "unknown" else parent

    def group_of(d: Path) -> str:
        if root is not None:
            try:
                rel = d.resolve().relative_to(Path(root).resolve())
                return str(rel) if str(rel) != "." else d.name
            except ValueError:
                pass
        return d.name

    m = _DCASE2021.match(stem)
    if m:
        if split != "unknown" and split != m["split"]:
            split = m["split"]  # the name is the authority; the folder may be a copy
        return ClipLabel(
            path,
            machine_dir.name,
            m["section"],
            m["domain"],
            m["split"],
            m["cond"],
            parse_attributes(m["attrs"]),
            "dcase2023",
            group_of(machine_dir),
        )
    m = _DCASE2021_EVAL.match(stem)
    if m:
        return ClipLabel(
            path,
            machine_dir.name,
            m["section"],
            "unknown",
            split,
            "unknown",
            (),
            "dcase2023-eval",
            group_of(machine_dir),
        )
    m = _DCASE2020.match(stem)
    if m:
        return ClipLabel(
            path, machine_dir.name, f"id_{m['id']}", "source", split, m["cond"], (), "dcase2020", group_of(machine_dir)
        )
    m = _DCASE2020_EVAL.match(stem)
    if m:
        return ClipLabel(
            path,
            machine_dir.name,
            f"id_{m['id']}",
            "source",
            split,
            "unknown",
            (),
            "dcase2020-eval",
            group_of(machine_dir),
        )
    m = _MIMII_FLAT.match(stem)
    if m:
        cond = "anomaly" if m["cond"] == "abnormal" else "normal"
        return ClipLabel(path, m["machine"], f"id_{m['id']}", "source", split, cond, (), "mimii-flat", group_of(parent))
    if _MIMII_NUM.match(stem) and parent.name in ("normal", "abnormal") and parent.parent.name.startswith("id_"):
        machine = parent.parent.parent
        cond = "anomaly" if parent.name == "abnormal" else "normal"
        return ClipLabel(
            path, machine.name, parent.parent.name, "source", "unknown", cond, (), "mimii", group_of(machine)
        )
    raise LabelError(
        f"{path}: file name follows no known scheme (DCASE 2020 'normal_id_00_00000000.wav', DCASE 2021-2024 "
        "'section_00_source_train_normal_0000_<attr>_<value>.wav', or MIMII 'id_00/normal/00000000.wav')"
    )


@dataclass
class DatasetIndex:
    clips: list[ClipLabel] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def machines(self) -> list[str]:
        return sorted({c.group for c in self.clips})

    def select(
        self, group: Optional[str] = None, split: Optional[str] = None, condition: Optional[str] = None
    ) -> list[ClipLabel]:
        return [
            c
            for c in self.clips
            if (group is None or c.group == group)
            and (split is None or c.split == split)
            and (condition is None or c.condition == condition)
        ]

    def summary(self) -> str:
        from collections import Counter

        counts = Counter((c.group, c.split, c.domain, c.condition) for c in self.clips)
        lines = [f"{len(self.clips)} clips in {len(self.machines())} machine folders, {len(self.skipped)} skipped"]
        for (g, s, d, cnd), n in sorted(counts.items()):
            lines.append(f"  {g:<28} {s:<6} {d:<7} {cnd:<8} {n:5d}")
        for p, why in self.skipped:
            lines.append(f"  skipped {p}: {why}")
        return "\n".join(lines)


def index_dataset(root: str | Path, check_audio: bool = True) -> DatasetIndex:
    """Every WAV below ``root`` with its labels. Mis-named or unreadable files are skipped and
    listed with the reason; nothing raises for a bad file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    idx = DatasetIndex()
    for path in iter_wavs([root]):
        try:
            label = parse_path(path, root)
            if check_audio:
                wav_info(path)
        except (LabelError, AudioFileError) as e:
            idx.skipped.append((path, str(e).split(": ", 1)[-1]))
            continue
        idx.clips.append(label)
    return idx
