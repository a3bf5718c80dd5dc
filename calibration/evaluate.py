"""``edge-agent evaluate``: DCASE-style scores of a model on a dataset in the DCASE layout.

For every machine folder: the bank is built from ``train/`` exactly as ``calibrate`` builds it
(source centres, target samples, threshold), every ``test/`` clip is scored through the same front
end, engine and k-NN as the runtime. Clip rule: a clip is cut into windows with the runtime's hop;
its score is the mean of its window scores (one window when the clip fits the window; a clip
shorter than a window is repeated to fill it). A clip is decided anomalous when that score exceeds
the bank's threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from calibration.dataset import ClipLabel, index_dataset
from calibration.enrol import EnrolResult
from calibration.metrics import harmonic_mean, section_scores
from calibration.policy import DCASE_POLICY, ThresholdPolicy
from calibration.report import write_reports
from edge_agent.audio.convert import prepare
from edge_agent.audio.wavio import iter_wavs, read_wav
from edge_agent.errors import UserError
from edge_agent.model.outputs import infer_signal
from edge_agent.scoring.bank import MemoryBank
from edge_agent.scoring.heads import REGISTRY, parse_score

log = logging.getLogger("edge_agent.evaluate")

# evaluate --adapt: (machine folder, name, train clips) -> (adapted engine or None, what adaptation did)
Adapter = Callable[[Path, str, list], tuple[Optional[object], dict]]


@dataclass
class MachineResult:
    machine: str
    sections: dict[str, dict]
    hmean: float
    clips: list[ClipLabel] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    threshold: float = float("nan")
    enrol: Optional[EnrolResult] = None
    adaptation: Optional[dict] = None  # evaluate --adapt: what adapting this machine's model did


class ClipEmbedder:
    """Reads clips and embeds their windows (hop ``hop_seconds``), bringing any rate/channels to the model's."""

    def __init__(self, engine, frontend, hop_seconds: float = 1.0, channel="mix"):
        self.engine, self.frontend, self.channel = engine, frontend, channel
        self.hop = max(1, int(round(hop_seconds * frontend.sample_rate)))

    def __call__(self, path: Path) -> np.ndarray:
        return self.infer(path)["embedding"]

    def infer(self, path: Path) -> dict[str, np.ndarray]:
        x, sr = read_wav(path)
        return infer_signal(
            self.engine, self.frontend, prepare(x, sr, self.frontend.sample_rate, self.channel), self.hop
        )


def enrol_from_clips(
    embedder: ClipEmbedder,
    clips: Sequence[ClipLabel],
    model,
    n_centres: int = 16,
    k: int = 1,
    normalise_domains: bool = False,
    policy: ThresholdPolicy = DCASE_POLICY,
    progress=None,
    score: Optional[str] = None,
    class_name: Optional[str] = None,
) -> EnrolResult:
    """The bank from normal clips, vetted and embedded exactly as ``calibrate --from`` does."""
    from calibration.service import enrol_paths

    res, skipped = enrol_paths(
        [c.path for c in clips],
        embedder.engine,
        embedder.hop,
        embedder.channel,
        n_centres=n_centres,
        k=k,
        normalise_domains=normalise_domains,
        policy=policy,
        score=score,
        class_name=class_name,
    )
    for p, why in skipped:
        log.warning("not enrolled %s: %s", p, why)
    if progress:
        progress(len(clips))
    return res


def score_clip(embedder: ClipEmbedder, bank: MemoryBank, path: Path) -> float:
    """A clip's score as the runtime scores its windows (with the bank's score head), averaged."""
    return float(np.mean(bank.anomaly_scores(embedder.infer(path))))


def machine_class(model, machine_dir: Path, section: str, head: str = "classifier") -> str:
    """A machine folder's class for a head that needs one: the class whose group is a suffix of its path."""
    from calibration.embed import CalibrationError

    head_spec = model.manifest.all_heads().get(head)
    classes = head_spec.classes if head_spec else []
    if not classes:
        raise CalibrationError(f"--score {head}: model {model.name} has no {head} head")
    path = str(Path(machine_dir).resolve())
    hits = [c for c in classes if c.rsplit("|", 1)[1] == section and path.endswith("/" + c.rsplit("|", 1)[0])]
    if len(hits) != 1:
        raise CalibrationError(
            f"{machine_dir} section {section}: not a class the model was trained on (classes: {', '.join(classes)})"
        )
    return hits[0]


def evaluate_machine(
    machine_dir: Path,
    embedder: ClipEmbedder,
    model,
    n_centres: int = 16,
    k: int = 1,
    normalise_domains: bool = False,
    policy: ThresholdPolicy = DCASE_POLICY,
    progress: Optional[Callable[[int], None]] = None,
    name: Optional[str] = None,
    score: Optional[str] = None,
    adapter: Optional[Adapter] = None,
) -> MachineResult:
    idx = index_dataset(machine_dir)
    for p, why in idx.skipped:
        log.warning("skipped %s: %s", p, why)
    train = [c for c in idx.clips if c.split == "train" and c.condition == "normal"]
    test = [c for c in idx.clips if c.split == "test" and c.condition != "unknown"]
    if len(train) < 2:
        raise ValueError(f"{machine_dir}: needs at least 2 normal clips in train/ to build a bank, found {len(train)}")
    if not test:
        raise ValueError(f"{machine_dir}: no labelled clips in test/")
    adaptation = None
    if adapter is not None:  # first-shot protocol: the model adapted on this machine's train clips
        own, adaptation = adapter(machine_dir, name or machine_dir.name, train)
        if own is not None:
            embedder = ClipEmbedder(own, own.bundle.frontend, embedder.hop / embedder.frontend.sample_rate)
            model = own.bundle
    class_name = None
    class_heads = [h for h in parse_score(score or model.manifest.score.head) if REGISTRY[h].needs_class]
    if class_heads:
        sections = sorted({c.section for c in train})
        if len(sections) != 1:
            raise ValueError(
                f"{machine_dir}: --score {class_heads[0]} evaluates one section per machine folder, found {sections}"
            )
        class_name = machine_class(model, machine_dir, sections[0], class_heads[0])
    result = enrol_from_clips(
        embedder, train, model, n_centres, k, normalise_domains, policy, progress, score, class_name
    )
    bank = result.bank
    scores = []
    for c in test:
        scores.append(score_clip(embedder, bank, c.path))
        if progress:
            progress(1)
    scores = np.array(scores)
    sections = {}
    for sec in sorted({c.section for c in test}):
        m = np.array([c.section == sec for c in test])
        y = np.array([c.condition == "anomaly" for c in test])[m]
        if y.all() or not y.any():
            log.warning("%s section %s: test clips of one class only; no AUC", machine_dir, sec)
            continue
        sections[sec] = section_scores(y, scores[m], np.array([c.domain for c in test])[m], scores[m] > bank.threshold)
    values = [v for s in sections.values() for k_, v in s.items() if k_.startswith(("auc", "pauc"))]
    return MachineResult(
        name or machine_dir.name,
        sections,
        harmonic_mean(values),
        test,
        scores,
        float(bank.threshold),
        result,
        adaptation,
    )


def find_machine_dirs(data_dir: Path) -> list[Path]:
    """Machine folders (those with a train/ and a test/ folder) at or below ``data_dir``."""
    data_dir = Path(data_dir)
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        return [data_dir]
    from edge_agent.audio.wavio import walk_dirs

    return sorted(d for d, dirs, _ in walk_dirs(data_dir) if "train" in dirs and "test" in dirs)


def count_clips(machine_dirs: Sequence[Path]) -> int:
    return sum(1 for d in machine_dirs for p in iter_wavs([d / "train", d / "test"]))


def evaluate(
    data_dir: Path, embedder: ClipEmbedder, model, out_dir: Optional[Path] = None, progress: bool = True, **kwargs
) -> dict:
    data_dir = Path(data_dir)
    dirs = find_machine_dirs(data_dir)
    if not dirs:
        raise ValueError(
            f"{data_dir}: no machine folders with train/ and test/ (the DCASE layout <machine>/train, <machine>/test)"
        )
    bar = tqdm(total=count_clips(dirs), desc="evaluating", unit="clip", disable=not progress)
    results = []
    for d in dirs:
        name = str(d.relative_to(data_dir)) if d != data_dir else d.name
        bar.set_postfix_str(name)
        try:
            results.append(evaluate_machine(d, embedder, model, progress=bar.update, name=name, **kwargs))
        except (ValueError, UserError) as e:
            log.warning("skipping %s: %s", d, e)
    bar.close()
    values = [v for r in results for s in r.sections.values() for k_, v in s.items() if k_.startswith(("auc", "pauc"))]
    summary = {
        "data_dir": str(data_dir),
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "clip_rule": "mean of window scores (hop as configured); decision: clip score > bank threshold",
        "hop_seconds": embedder.hop / embedder.frontend.sample_rate,
        "machines": {
            r.machine: {
                "hmean": r.hmean,
                "threshold": r.threshold,
                "sections": r.sections,
                **({"adaptation": r.adaptation} if r.adaptation is not None else {}),
            }
            for r in results
        },
        "hmean": harmonic_mean(values) if values else float("nan"),
    }
    if out_dir is not None:
        write_reports(Path(out_dir), results, summary)
    return {"summary": summary, "results": results}
