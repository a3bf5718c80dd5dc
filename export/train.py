"""``edge-agent train``: train a recipe's embedding network on normal clips, on the CPU.

Each epoch takes a random window from every clip (time-warped for target-domain clips), runs the
numpy front end that the runtime uses, balances the target domain with SMOTE, and trains the
embedding under the joint-class and machine-type angular-margin losses (L = L_joint + L_machine),
with mixup. A checkpoint is written after every epoch.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from .augment import mixup_weights, smote, time_warp
from .dataindex import TrainSet, build_trainset
from .losses import make_head
from .recipes import build_model

log = logging.getLogger("edge_agent.train")

CHECKPOINT_FORMAT = 1


@dataclass
class TrainArgs:
    data: list[str]
    out: str
    recipe: str = "dualbranch"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    loss: str = "subcluster-adacos"
    sub_clusters: int = 16
    crops_per_clip: int = 1
    mixup_alpha: float = 0.5  # 0 disables mixup
    mixup_prob: float = 0.5
    use_smote: bool = True
    time_warp: float = 0.1  # 0 disables time warping of target-domain clips
    pseudo_k: int = 4
    exclude_test_of: list[str] = field(default_factory=lambda: ["dcase2023t2/valve", "mimii/fan"])
    include_test_normals: bool = True
    recipe_config: dict = field(default_factory=dict)
    threads: int = 0


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= n:
        return np.tile(x, int(np.ceil(n / len(x))))[:n]
    s = int(rng.integers(0, len(x) - n + 1))
    return x[s : s + n]


def _epoch_features(ts: TrainSet, frontend, rng: np.random.Generator, args: TrainArgs):
    """One random window per clip (and per crop) -> front-end features, joint ids, target mask."""
    joint, target = ts.joint_ids(), ts.domains()
    wins, labs, tgt = [], [], []
    for _ in range(args.crops_per_clip):
        for it, j, t in zip(ts.items, joint, target):
            w = _crop(it.audio, frontend.window_samples, rng)
            if t and args.time_warp > 0 and rng.random() < 0.5:
                w = time_warp(w, rng, args.time_warp)
            wins.append(w)
            labs.append(j)
            tgt.append(t)
    wins = np.stack(wins)
    feats: dict[str, list] = {}
    for i in range(0, len(wins), 64):
        for k, v in frontend(wins[i : i + 64]).items():
            feats.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in feats.items()}, np.array(labs), np.array(tgt)


def save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (train one with 'edge-agent train')")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"checkpoint {path} cannot be read ({e}); is it an edge-agent training checkpoint?") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or "recipe" not in ck:
        raise ValueError(f"checkpoint {path} is not an edge-agent training checkpoint (format {CHECKPOINT_FORMAT})")
    return ck


def train(args: TrainArgs, trainset: Optional[TrainSet] = None, progress: bool = True) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = build_model(args.recipe, args.recipe_config)
    frontend = cfg.frontend()
    t0 = time.time()
    ts = trainset or build_trainset(
        args.data, frontend.sample_rate, args.exclude_test_of, args.include_test_normals, args.pseudo_k, args.seed, log=log.warning
    )
    if len(ts.items) < 2:
        raise ValueError(f"only {len(ts.items)} usable normal clips under {', '.join(args.data)}; training needs at least 2")
    summary = ts.summary()
    log.info("training data: %s", json.dumps(summary))
    machine_of = {it.joint: it.machine for it in ts.items}  # a joint class belongs to one machine type
    machine_of_joint = np.array([ts.machine_classes.index(machine_of[j]) for j in ts.joint_classes])
    dim = model.embedding_dim
    head_joint = make_head(args.loss, dim, len(ts.joint_classes), args.sub_clusters)
    head_machine = make_head(args.loss, dim, len(ts.machine_classes), args.sub_clusters)
    params = [p for m in (model, head_joint, head_machine) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.epochs))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    history = []
    bar = tqdm(range(args.epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        feats, joint, target = _epoch_features(ts, frontend, rng, args)
        if args.use_smote:
            feats, joint, _ = smote(feats, joint, target, int(rng.integers(1 << 31)))
        machine = machine_of_joint[joint]
        order = rng.permutation(len(joint))
        model.train(); head_joint.train(); head_machine.train()
        losses = []
        for b in range(0, len(order), args.batch_size):
            idx = order[b : b + args.batch_size]
            if len(idx) < 2:
                continue
            x = {k: torch.from_numpy(v[idx]) for k, v in feats.items()}
            yj = torch.nn.functional.one_hot(torch.from_numpy(joint[idx]), len(ts.joint_classes)).float()
            ym = torch.nn.functional.one_hot(torch.from_numpy(machine[idx]), len(ts.machine_classes)).float()
            if args.mixup_alpha > 0 and rng.random() < args.mixup_prob:
                lam, perm = mixup_weights(rng, len(idx), args.mixup_alpha)
                lam_t = torch.from_numpy(lam)
                x = {k: v * lam_t.view(-1, *([1] * (v.dim() - 1))) + v[perm] * (1 - lam_t).view(-1, *([1] * (v.dim() - 1))) for k, v in x.items()}
                yj = yj * lam_t[:, None] + yj[perm] * (1 - lam_t[:, None])
                ym = ym * lam_t[:, None] + ym[perm] * (1 - lam_t[:, None])
            emb = model.raw_embedding(*(x[n] for n in model.input_names))
            loss = head_joint(emb, yj) + head_machine(emb, ym)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        history.append(float(np.mean(losses)) if losses else float("nan"))
        bar.set_postfix(loss=f"{history[-1]:.3f}")
        log.info("epoch %d/%d loss %.4f", epoch + 1, args.epochs, history[-1])
        save_checkpoint(out, {
            "format": CHECKPOINT_FORMAT,
            "recipe": args.recipe,
            "config": cfg.to_dict(),
            "state_dict": model.state_dict(),
            "joint_classes": ts.joint_classes,
            "machine_classes": ts.machine_classes,
            "epoch": epoch + 1,
            "loss_history": history,
            "train_args": json.loads(json.dumps(asdict(args), default=str)),
            "data_summary": json.loads(json.dumps(summary, default=str)),
            "seconds": round(time.time() - t0, 1),
        })
    return {"checkpoint": str(out), "epochs": args.epochs, "final_loss": history[-1] if history else None,
            "seconds": round(time.time() - t0, 1), "data": summary}
