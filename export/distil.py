"""Distillation: train one small network to reproduce a teacher bundle's embeddings.

The teacher (the built-in default ensemble, for the built-in fast model) is run once, through ONNX
Runtime and its own front end, over a fixed pool of windows cut from the training clips, plus
changed copies of them (``augmented``). The student, a
recipe model with its own (cheaper) front end, then learns to map the same windows to the same
points: loss = mean (1 - cosine(student, teacher)) + the squared difference between the batch's
pairwise cosine similarities in both spaces. The second term is what k-NN scoring depends on: the
distances between windows, not the coordinates. The checkpoint is an ordinary training checkpoint,
so ``export_bundle`` turns it into a bundle.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge_agent.audio.windows import frame_windows
from edge_agent.engine import OnnxEngine
from edge_agent.model.bundle import Bundle
from export.dataindex import TrainSet, build_trainset
from export.recipes import build_model
from export.train import CHECKPOINT_FORMAT, save_checkpoint

log = logging.getLogger("edge_agent.distil")


@dataclass
class DistilArgs:
    teacher: str  # bundle name or folder
    data: list[str]
    out: str
    recipe: str = "dualbranch"
    recipe_config: dict = field(default_factory=dict)
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    pool_hop_seconds: float = 0.25  # windows of the pool start this far apart in every clip
    relation_weight: float = 1.0
    seed: int = 0
    threads: int = 0
    held_out: float = 0.05  # share of clips whose windows only measure the student, never train it
    # Extra copies of the pool, each window changed at random (another clip mixed in, or played
    # faster or slower), with the teacher's embedding of the changed sound: the student must follow
    # the teacher off the normal sound too, since anomalies are exactly that.
    augment_copies: int = 2
    exclude_test_of: list[str] = field(default_factory=lambda: ["dcase2023t2/valve", "mimii/fan", "mimii_8ch"])


def window_pool(ts: TrainSet, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Every clip cut at ``hop``: (windows (n, window) float32, clip index of each window)."""
    wins, clip = [], []
    for i, it in enumerate(ts.items):
        w = frame_windows(it.audio, window, hop)
        wins.append(w)
        clip.append(np.full(len(w), i))
    return np.concatenate(wins), np.concatenate(clip)


def augmented(windows: np.ndarray, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One changed copy of every window: half are mixed with a window of another clip (the original
    at 50-90 %), half are played 0.85-1.15 times as fast (pitch and tempo); all get a gain of
    -6 to +6 dB."""
    from export.train import speed_perturb

    out = np.empty_like(windows)
    n = windows.shape[1]
    for i, w in enumerate(windows):
        if rng.random() < 0.5:
            j = int(rng.integers(len(windows)))
            while clip[j] == clip[i] and len(np.unique(clip)) > 1:
                j = int(rng.integers(len(windows)))
            lam = rng.uniform(0.5, 0.9)
            x = lam * w + (1 - lam) * windows[j]
        else:
            x = speed_perturb(np.tile(w, 2), n, float(rng.uniform(0.85, 1.15)), rng)
        out[i] = x * 10 ** (rng.uniform(-6, 6) / 20)
    return out


def teacher_embeddings(bundle: Bundle, windows: np.ndarray, threads: int, batch: int = 32) -> np.ndarray:
    engine = OnnxEngine(bundle, "cpu", threads=threads)
    fe = bundle.frontend
    out = [
        engine.embed(fe(windows[i : i + batch]))
        for i in tqdm(range(0, len(windows), batch), desc="teacher", unit="batch")
    ]
    return np.concatenate(out).astype(np.float32)


def distil_loss(student: torch.Tensor, teacher: torch.Tensor, relation_weight: float) -> torch.Tensor:
    """Both (batch, dim), unit length."""
    point = (1 - (student * teacher).sum(dim=1)).mean()
    relation = ((student @ student.T - teacher @ teacher.T) ** 2).mean()
    return point + relation_weight * relation


def _features(frontend, windows: np.ndarray, names) -> list[torch.Tensor]:
    f = frontend(windows)
    return [torch.from_numpy(f[n]) for n in names]


def agreement(model, frontend, windows: np.ndarray, targets: np.ndarray, batch: int = 128) -> dict:
    """How closely the student reproduces the teacher on ``windows``: mean cosine of the embeddings and
    the mean absolute error of pairwise cosine distances (what k-NN scores are made of)."""
    model.eval()
    with torch.no_grad():
        s = torch.cat(
            [
                model(*_features(frontend, windows[i : i + batch], model.input_names))
                for i in range(0, len(windows), batch)
            ]
        ).numpy()
    pick = np.random.default_rng(0).permutation(len(s))[:512]
    ds, dt = 1 - s[pick] @ s[pick].T, 1 - targets[pick] @ targets[pick].T
    return {"cosine": float((s * targets).sum(axis=1).mean()), "pair_distance_mae": float(np.abs(ds - dt).mean())}


def distil(args: DistilArgs, progress: bool = True) -> dict:
    t0 = time.time()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = Bundle.load(args.teacher)
    model, cfg = build_model(args.recipe, args.recipe_config)
    frontend = cfg.frontend()
    if (
        frontend.sample_rate != teacher.frontend.sample_rate
        or frontend.window_samples != teacher.frontend.window_samples
    ):
        raise ValueError(
            f"the student's windows ({frontend.window_samples} samples at {frontend.sample_rate} Hz) must match the "
            f"teacher's ({teacher.frontend.window_samples} at {teacher.frontend.sample_rate} Hz)"
        )
    if model.embedding_dim != teacher.embedding_dim:
        raise ValueError(
            f"the student's embedding has {model.embedding_dim} dimensions, the teacher's {teacher.embedding_dim}; "
            "set the recipe's size (dualbranch: branch_dim = teacher dim / 2)"
        )
    ts = build_trainset(args.data, frontend.sample_rate, args.exclude_test_of, True, 4, args.seed, log=log.warning)
    hop = int(round(args.pool_hop_seconds * frontend.sample_rate))
    windows, clip = window_pool(ts, frontend.window_samples, hop)
    if args.augment_copies:
        windows = np.concatenate([windows] + [augmented(windows, clip, rng) for _ in range(args.augment_copies)])
        clip = np.tile(clip, args.augment_copies + 1)
    log.info(
        "distillation pool: %d windows from %d clips (hop %.2f s, %d changed copies)",
        len(windows),
        len(ts.items),
        args.pool_hop_seconds,
        args.augment_copies,
    )
    targets = teacher_embeddings(teacher, windows, args.threads)
    # the student learns the pool's clips, and through the teacher what the teacher learnt
    heard = sorted({it.fingerprint for it in ts.items} | teacher.trained_on())
    held = rng.random(len(ts.items)) < args.held_out
    train_idx, test_idx = np.flatnonzero(~held[clip]), np.flatnonzero(held[clip])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * int(np.ceil(len(train_idx) / args.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(1, steps), pct_start=0.1)
    history, checks = [], []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(range(args.epochs), desc="distilling", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = rng.permutation(train_idx)
        losses = []
        for b in range(0, len(order), args.batch_size):
            idx = np.sort(order[b : b + args.batch_size])
            if len(idx) < 2:
                continue
            s = model(*_features(frontend, windows[idx], model.input_names))
            loss = distil_loss(s, torch.from_numpy(targets[idx]), args.relation_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
        check = agreement(model, frontend, windows[test_idx], targets[test_idx]) if len(test_idx) else {}
        checks.append(check)
        bar.set_postfix(loss=f"{history[-1]:.4f}", **{k: f"{v:.4f}" for k, v in check.items()})
        log.info("epoch %d/%d loss %.4f held-out %s", epoch + 1, args.epochs, history[-1], json.dumps(check))
        save_checkpoint(
            out,
            {
                "format": CHECKPOINT_FORMAT,
                "recipe": args.recipe,
                "config": cfg.to_dict(),
                "state_dict": model.state_dict(),
                "heads": {},
                "joint_classes": ts.joint_classes,
                "machine_classes": ts.machine_classes,
                "section_classes": ts.section_classes,
                "loss": "distillation",
                "epoch": epoch + 1,
                "loss_history": history,
                "train_args": json.loads(json.dumps(asdict(args), default=str)),
                "data_summary": json.loads(json.dumps(ts.summary(), default=str)),
                "seconds": round(time.time() - t0, 1),
                "clip_fingerprints": heard,
                "distillation": {
                    "teacher": {"name": teacher.name, "version": teacher.version, "sha256": teacher.sha256},
                    "pool_windows": int(len(windows)),
                    "held_out_windows": int(len(test_idx)),
                    "held_out": checks,
                },
            },
        )
    return {
        "checkpoint": str(out),
        "epochs": args.epochs,
        "final_loss": history[-1] if history else None,
        "held_out": checks[-1] if checks else {},
        "seconds": round(time.time() - t0, 1),
    }
