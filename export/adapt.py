"""Field adaptation: a per-machine copy of a bundle's network, fine-tuned on that machine's normal
sound (``calibrate --adapt``, ``evaluate --adapt``, the end of a learning period with ``--adapt``).

- The bundle's ONNX graph becomes a trainable PyTorch module (``export/onnx_torch.py``), so the
  built-in bundles adapt without their training checkpoints. Batch-norm statistics stay as
  trained (eval mode): a few hundred windows of one machine would otherwise re-centre them.
- Classes the embedding learns to tell apart: the machine's pieces in up to ``pseudo_k`` k-means
  clusters of their generic embeddings per domain (pseudo-attributes: operating modes no label
  names); with ``augment``, each of those played ``speed`` slower and faster as classes of their own
  (a change of speed or pitch is a fault sign that must not sound normal); with a corpus, the other
  machines' sections (outlier exposure). Sub-cluster AdaCos, AdamW with a cosine schedule, a fixed
  number of steps: the time does not grow with the audio, and the audio itself is bounded.
- Export: ONNX with the generic model's inputs and outputs, parity checked against PyTorch; the
  manifest says what the model was adapted from and on. It is kept only when the label-free check
  (``calibration.adapt_check``) on held-out audio says it is better than the generic model.
"""

from __future__ import annotations

import datetime as _dt
import logging
import resource
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from calibration.adapt_audio import Piece, bounded, split_held_out
from calibration.adapt_check import compare
from edge_agent.audio.windows import frame_windows
from edge_agent.model.bundle import Bundle, write_manifest, write_training_clips
from edge_agent.model.manifest import parse_manifest
from edge_agent.model.outputs import infer_signal
from edge_agent.state.atomic import atomic_dir
from export.losses import make_head
from export.onnx_export import ParityError, check_parity
from export.onnx_torch import torch_model
from export.train import speed_perturb

log = logging.getLogger("edge_agent.adapt")


class AdaptError(ValueError):
    """The adaptation cannot run as asked; the message says why."""


@dataclass(frozen=True)
class AdaptSettings:
    steps: int = 150  # optimiser steps (a fixed budget: the time does not grow with the audio)
    batch_size: int = 32
    lr: float = 1e-4
    hold_out: float = 0.25  # the last quarter of each domain's pieces: never learnt, checked and thresholded on
    pseudo_k: int = 4  # k-means pseudo-attribute clusters per domain, at most
    augment: bool = True  # the machine played slower and faster as classes of its own
    speed: float = 0.08
    corpus: tuple[str, ...] = ()  # folders of other machines' normal clips (outlier exposure)
    corpus_clips: int = 200
    max_minutes: float = 60.0  # audio learnt from, at most (drawn evenly from what is given)
    check_windows: int = 600  # held-out windows in the label-free check, at most
    bank_windows: int = 2000  # learnt windows that make the check's bank, at most
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present (a Jetson), else the CPU
    threads: int = 0  # CPU threads for torch (0: torch's default)


@dataclass
class AdaptOutcome:
    kept: bool
    bundle_dir: Optional[Path]  # the adapted bundle (written only when kept)
    check: dict
    info: dict
    learn: list[Piece] = field(repr=False, default_factory=list)
    held: list[Piece] = field(repr=False, default_factory=list)

    def describe(self) -> str:
        g, a = self.check["generic"]["auc"], self.check["adapted"]["auc"]
        lo, hi = self.check["difference"]["interval95"]
        verdict = "kept" if self.kept else "not kept: the generic model stays"
        return (
            f"adapted model {verdict} (label-free check on {self.check['windows']['held_out']} held-out windows "
            f"with synthetic faults: AUC {a:.3f} against the generic model's {g:.3f}, difference "
            f"[{lo:+.3f}, {hi:+.3f}]); {self.info['steps']} steps in {self.info['seconds']:.0f} s on "
            f"{self.info['device']}"
        )


def pick_device(kind: str) -> torch.device:
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind.startswith("cuda") and not torch.cuda.is_available():
        raise AdaptError("--adapt-device cuda: no CUDA device is visible to PyTorch")
    return torch.device(kind)


def piece_classes(engine, pieces: list[Piece], k: int, seed: int) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """Pseudo-attributes: k-means clusters of the pieces' mean generic embeddings, per domain. Also
    returns each piece's generic embeddings (a window a second), which the check's bank reuses."""
    from sklearn.cluster import KMeans

    fe = engine.bundle.frontend
    embs = [infer_signal(engine, fe, p.audio, fe.sample_rate)["embedding"] for p in pieces]
    means = np.stack([e.mean(0) for e in embs])
    labels, names = np.zeros(len(pieces), dtype=int), []
    for d in dict.fromkeys(p.domain for p in pieces):
        idx = np.array([i for i, p in enumerate(pieces) if p.domain == d])
        kd = max(1, min(k, len(idx) // 3))
        cl = KMeans(kd, n_init=10, random_state=seed).fit_predict(means[idx]) if kd > 1 else np.zeros(len(idx), int)
        labels[idx] = cl + len(names)
        names += [f"{d}/cluster{j}" for j in range(kd)]
    return labels, names, embs


class Sampler:
    """Random windows of labelled pieces (with the augmentation classes), without holding them all."""

    def __init__(self, pieces, labels, n: int, rng, speeds=(1.0,), n_base: int = 0):
        self.pieces, self.labels, self.n, self.rng, self.speeds = pieces, np.asarray(labels), n, rng, speeds
        self.n_base = n_base  # classes before augmentation: speed s of class c is class c + s * n_base

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.rng.integers(0, len(self.pieces), k)
        sp = self.rng.integers(0, len(self.speeds), k)
        wins = [speed_perturb(self.pieces[i].audio, self.n, self.speeds[s], self.rng) for i, s in zip(idx, sp)]
        return np.stack(wins), self.labels[idx] + sp * self.n_base


def _windows(pieces: list[Piece], n: int, hop: int, limit: int, rng) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Up to ``limit`` windows (hop ``hop``) of the pieces, drawn evenly, and which they are (piece,
    window of the piece); only the drawn ones are cut."""
    counts = np.array([max(1, (len(p.audio) - n) // hop + 1) for p in pieces])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    pick = np.arange(total) if total <= limit else np.sort(rng.choice(total, limit, replace=False))
    out, where = [], []
    for j in pick:
        i = int(np.searchsorted(starts, j, side="right") - 1)
        k = int(j - starts[i])
        out.append(frame_windows(pieces[i].audio[k * hop : k * hop + n], n, n)[0])
        where.append((i, k))
    return np.stack(out), where


def _embedding(model, feats: dict, names, out_index: int, device):
    """The network's embedding output for a batch of front-end features."""
    y = model(*(torch.from_numpy(feats[n]).to(device) for n in names))
    return y[out_index] if isinstance(y, (tuple, list)) else y


def _embedder(model, frontend, names, out_index, device) -> Callable[[np.ndarray], np.ndarray]:
    def embed(windows: np.ndarray) -> np.ndarray:
        model.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(windows), 64):
                y = _embedding(model, frontend(windows[i : i + 64]), names, out_index, device)
                outs.append(torch.nn.functional.normalize(y, dim=1).cpu().numpy())
        return np.concatenate(outs)

    return embed


def adapt_machine(
    engine,
    pieces: list[Piece],
    machine: str,
    out_dir: Path,
    settings: AdaptSettings = AdaptSettings(),
    corpus: tuple[Piece, ...] = (),
    progress: bool = True,
    keep_anyway: bool = False,
) -> AdaptOutcome:
    """Adapt ``engine``'s bundle to ``pieces`` of one machine; write the bundle to ``out_dir`` when
    the check keeps it (or ``keep_anyway``: for measuring). ``corpus``: other machines' pieces."""
    t0 = time.time()
    bundle: Bundle = engine.bundle
    fe = bundle.frontend
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = pick_device(settings.device)
    model = torch_model(bundle.model_path).to(device)  # first: a graph it cannot read is refused at once
    pieces = bounded(pieces, settings.max_minutes * 60, fe.sample_rate, rng)
    learn, held = split_held_out(pieces, settings.hold_out)
    labels, classes, learnt_generic = piece_classes(engine, learn, settings.pseudo_k, settings.seed)
    speeds = (1.0, 1.0 - settings.speed, 1.0 + settings.speed) if settings.augment else (1.0,)
    n_machine = len(classes) * len(speeds)
    names = [f"{machine}:{c}" + (f"@x{s:g}" if s != 1.0 else "") for s in speeds for c in classes]
    own = Sampler(learn, labels, fe.window_samples, rng, speeds, len(classes))
    other = None
    if corpus:
        groups = sorted({p.group for p in corpus})
        other = Sampler(list(corpus), [n_machine + groups.index(p.group) for p in corpus], fe.window_samples, rng)
        names += groups
    inputs, outputs = bundle.manifest.input_names, bundle.manifest.output_names
    out_index = outputs.index("embedding")
    head = make_head("subcluster-adacos", bundle.embedding_dim, len(names)).to(device)
    params = [p for m in (model, head) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, settings.steps))
    model.eval()  # batch-norm statistics stay as trained; the weights learn
    history = []
    bar = tqdm(range(settings.steps), desc=f"adapting {machine}", unit="step", file=sys.stderr, disable=not progress)
    for _ in bar:
        half = settings.batch_size // 2 if other is not None else settings.batch_size
        w, y = own.draw(half)
        if other is not None:
            w2, y2 = other.draw(settings.batch_size - half)
            w, y = np.concatenate([w, w2]), np.concatenate([y, y2])
        emb = _embedding(model, fe(w), inputs, out_index, device)
        target = torch.nn.functional.one_hot(torch.from_numpy(y).to(device), len(names)).float()
        loss = head(emb, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.item()))
        bar.set_postfix(loss=f"{np.mean(history[-10:]):.3f}")
    train_seconds = time.time() - t0
    model = model.cpu().eval()
    # the check: a bank of learnt windows, held-out windows as they are and with a synthetic fault
    hop = fe.sample_rate  # one window a second, as the runtime's default hop
    bank_w, where = _windows(learn, fe.window_samples, hop, settings.bank_windows, rng)
    held_w, _ = _windows(held, fe.window_samples, hop, settings.check_windows, rng)
    generic = lambda w: np.concatenate([engine.embed(fe(w[i : i + 64])) for i in range(0, len(w), 64)])  # noqa: E731
    generic_bank = np.stack([learnt_generic[i][k] for i, k in where])  # embedded once already, for the clusters
    adapted = _embedder(model, fe, inputs, out_index, "cpu")
    check = compare(generic, adapted, bank_w, held_w, fe.sample_rate, generic_bank=generic_bank)
    info = {
        "machine": machine,
        "from": bundle.describe(),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "classes": names,
        "audio": {
            "pieces_learnt": len(learn),
            "pieces_held_out": len(held),
            "seconds_learnt": round(sum(len(p.audio) for p in learn) / fe.sample_rate, 1),
            "seconds_held_out": round(sum(len(p.audio) for p in held) / fe.sample_rate, 1),
            "corpus_clips": len(corpus),
        },
        "steps": settings.steps,
        "loss": {"first": float(np.mean(history[:10])), "last": float(np.mean(history[-10:]))},
        "device": str(device),
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.time() - t0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "check": check,
    }
    kept = check["kept"] or keep_anyway
    if kept:
        export_adapted(model, bundle, Path(out_dir), info, held_w[:8], [p.fingerprint for p in learn])
    return AdaptOutcome(check["kept"], Path(out_dir) if kept else None, check, info, learn, held)


def export_adapted(model, bundle: Bundle, out_dir: Path, info: dict, windows: np.ndarray, heard) -> Bundle:
    """The adapted network as a bundle beside the generic one's manifest: same front end, inputs and
    outputs; the manifest's ``adapted`` says from what and on what; parity checked on real windows."""
    fe = bundle.frontend
    names, outputs = bundle.manifest.input_names, bundle.manifest.output_names
    feats = fe(windows)
    example = tuple(torch.from_numpy(feats[n][:2]) for n in names)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        path = tmp / bundle.manifest.model_file
        with warnings.catch_warnings():  # the tracer's notes on traced shapes
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                example,
                str(path),
                input_names=names,
                output_names=outputs,
                opset_version=bundle.manifest.opset,
                dynamo=False,
                dynamic_axes={n: {0: "batch"} for n in (*names, *outputs)},
            )
        parity, _ = check_parity(model, path, feats, names)
        if not parity <= 1e-4:
            raise ParityError(f"adapted ONNX output differs from PyTorch by {parity:.2e}; nothing was written")
        heard_all = sorted(bundle.trained_on() | {h for h in heard if h})
        m = bundle.manifest.to_json()
        m.pop("files", None)
        m.pop("quantization", None)
        m.update(
            name=f"{bundle.name}+{info['machine']}",
            version=f"{bundle.version}+adapted.{_dt.date.today().isoformat()}",
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            parity_max_abs_diff=parity,
            adapted=info,
            training=write_training_clips(tmp, heard_all, {**bundle.manifest.training, "adapted_from": bundle.name}),
        )
        write_manifest(tmp, parse_manifest(m))
    log.info("wrote adapted bundle %s (parity %.1e)", out_dir, parity)
    return Bundle.load(out_dir)
