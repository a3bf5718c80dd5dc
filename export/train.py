"""``edge-agent train``: train a recipe's embedding network on normal clips, on the CPU.

Each epoch takes a random window from every clip (time-warped for target-domain clips), runs the
numpy front end that the runtime uses, balances the target domain with SMOTE, and trains the
embedding under the joint-class and machine-type angular-margin losses (L = L_joint + L_machine),
with mixup. A checkpoint is written after every epoch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from edge_agent.state.atomic import atomic_write
from export.augment import mixup_weights, smote, time_warp
from export.dataindex import TrainSet, build_trainset
from export.losses import make_head
from export.recipes import build_model

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
    loss: str = ""  # "" = the recipe's default (subcluster-adacos for dualbranch)
    sub_clusters: int = 16
    crops_per_clip: int = 1
    mixup_alpha: float = 0.5  # 0 disables mixup
    mixup_prob: float = 0.5
    use_smote: bool = True
    time_warp: float = 0.1  # 0 disables time warping of target-domain clips
    pseudo_k: int = 4
    exclude_test_of: list[str] = field(default_factory=lambda: ["dcase2023t2/valve", "mimii/fan"])
    include_test_normals: bool = True
    exclude: list[str] = field(default_factory=list)  # machine folders left out altogether
    hold_out: float = 0.0  # fraction of each machine folder's clips kept out, to fit thresholds on
    recipe_config: dict = field(default_factory=dict)
    threads: int = 0
    pretrained: list[str] = field(default_factory=list)  # PATH or PART=PATH (local files only)
    speed_perturb: Optional[list[float]] = None  # speed factors drawn per clip; None = the recipe's default


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= n:
        return np.tile(x, int(np.ceil(n / len(x))))[:n]
    s = int(rng.integers(0, len(x) - n + 1))
    return x[s : s + n]


def _epoch_features(ts: TrainSet, frontend, rng: np.random.Generator, args: TrainArgs):
    """One random window per clip (and per crop) -> front-end features, joint ids, target mask."""
    joint, target = ts.joint_ids(), ts.domains()
    wins, labs, tgt = [], [], []
    speeds = args.speed_perturb or [1.0]
    for _ in range(args.crops_per_clip):
        for it, j, t in zip(ts.items, joint, target):
            w = speed_perturb(
                it.audio, frontend.window_samples, float(rng.choice(speeds)) if len(speeds) > 1 else 1.0, rng
            )
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


def speed_perturb(x: np.ndarray, n: int, factor: float, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``n`` samples played ``factor`` times faster (tempo and pitch, as Kaldi's
    speed perturbation): a crop of n * factor samples resampled to n."""
    if factor == 1.0:
        return _crop(x, n, rng)
    from fractions import Fraction

    from scipy.signal import resample_poly

    f = Fraction(factor).limit_denominator(20)
    w = resample_poly(_crop(x, int(np.ceil(n * factor)), rng), f.denominator, f.numerator).astype(np.float32)
    return w[:n] if len(w) >= n else np.pad(w, (0, n - len(w)))


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_write(path) as f:
        torch.save(payload, f)


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


def _payload(
    args: TrainArgs,
    cfg,
    model,
    heads: dict,
    ts: TrainSet,
    loss_kind: str,
    epoch: int,
    history: list,
    summary: dict,
    t0: float,
    extra: Optional[dict] = None,
) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "recipe": args.recipe,
        "config": cfg.to_dict(),
        "state_dict": model.state_dict(),
        "heads": {t: h.state_dict() for t, h in heads.items()},
        "joint_classes": ts.joint_classes,
        "machine_classes": ts.machine_classes,
        "section_classes": ts.section_classes,
        "loss": loss_kind,
        "epoch": epoch,
        "loss_history": history,
        "train_args": json.loads(json.dumps(asdict(args), default=str)),
        "data_summary": json.loads(json.dumps(summary, default=str)),
        "clip_fingerprints": sorted({it.fingerprint for it in ts.items if it.fingerprint}),
        "seconds": round(time.time() - t0, 1),
        **(extra or {}),
    }


def train(args: TrainArgs, trainset: Optional[TrainSet] = None, progress: bool = True) -> dict:
    from export.pretrained import parse_pretrained

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = build_model(args.recipe, args.recipe_config)
    pretrained = parse_pretrained(args.pretrained, model.pretrained_slots)
    if args.speed_perturb is None:
        args.speed_perturb = list(model.speed_perturb)
    frontend = cfg.frontend()
    t0 = time.time()
    ts = trainset or build_trainset(
        args.data,
        frontend.sample_rate,
        args.exclude_test_of,
        args.include_test_normals,
        args.pseudo_k,
        args.seed,
        log=log.warning,
        exclude=args.exclude,
        hold_out=args.hold_out,
    )
    if len(ts.items) < 2:
        raise ValueError(
            f"only {len(ts.items)} usable normal clips under {', '.join(args.data)}; training needs at least 2"
        )
    summary = ts.summary()
    log.info("training data: %s", json.dumps(summary))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if model.own_training:  # clvae: CNN, then the VAE on its features
        hist = model.fit(ts, frontend, args, rng, pretrained, progress, _epoch_features)
        final = hist["vae"] or hist["backbone"]
        save_checkpoint(
            out, _payload(args, cfg, model, {}, ts, "vae", len(final), final, summary, t0, {"stage_history": hist})
        )
        return {
            "checkpoint": str(out),
            "epochs": len(final),
            "final_loss": final[-1] if final else None,
            "seconds": round(time.time() - t0, 1),
            "data": summary,
        }
    if pretrained:
        for name, path in pretrained.items():
            info = model.load_pretrained(name, path)
            log.info("loaded %s weights from %s (%d tensors; %d unused)", name, path, info["loaded"], info["unused"])
    dim = model.embedding_dim
    targets = model.targets
    loss_kind = args.loss or model.default_loss
    # Every target class is a function of the joint class, so SMOTE balances joint classes and the
    # other labels follow.
    joint_item = {it.joint: it for it in ts.items}
    target_of_joint = {
        t: np.array([ts.classes(t).index(ts.class_of(joint_item[j], t)) for j in ts.joint_classes]) for t in targets
    }
    heads = {t: make_head(loss_kind, dim, len(ts.classes(t)), args.sub_clusters) for t in targets}
    params = [p for m in (model, *heads.values()) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.epochs))
    history = []
    bar = tqdm(range(args.epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        feats, joint, target = _epoch_features(ts, frontend, rng, args)
        if args.use_smote:
            feats, joint, _ = smote(feats, joint, target, int(rng.integers(1 << 31)))
        order = rng.permutation(len(joint))
        model.train()
        for h in heads.values():
            h.train()
        losses = []
        for b in range(0, len(order), args.batch_size):
            idx = order[b : b + args.batch_size]
            if len(idx) < 2:
                continue
            x = {k: torch.from_numpy(v[idx]) for k, v in feats.items()}
            ys = {
                t: torch.nn.functional.one_hot(
                    torch.from_numpy(target_of_joint[t][joint[idx]]), len(ts.classes(t))
                ).float()
                for t in targets
            }
            if args.mixup_alpha > 0 and rng.random() < args.mixup_prob:
                lam, perm = mixup_weights(rng, len(idx), args.mixup_alpha)
                lam_t = torch.from_numpy(lam)
                x = {
                    k: v * lam_t.view(-1, *([1] * (v.dim() - 1)))
                    + v[perm] * (1 - lam_t).view(-1, *([1] * (v.dim() - 1)))
                    for k, v in x.items()
                }
                ys = {t: y * lam_t[:, None] + y[perm] * (1 - lam_t[:, None]) for t, y in ys.items()}
            inputs = [x[n] for n in model.input_names]
            embs = model.target_embeddings(*inputs)  # w2v-ast: sub-systems trained on different labels
            loss = 0
            for t, y in ys.items():
                reps = embs[t].shape[0] // len(idx)  # frame-sequence models give several embeddings per window
                loss = loss + heads[t](embs[t], y.repeat_interleave(reps, dim=0) if reps > 1 else y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        history.append(float(np.mean(losses)) if losses else float("nan"))
        bar.set_postfix(loss=f"{history[-1]:.3f}")
        log.info("epoch %d/%d loss %.4f", epoch + 1, args.epochs, history[-1])
        save_checkpoint(out, _payload(args, cfg, model, heads, ts, loss_kind, epoch + 1, history, summary, t0))
    return {
        "checkpoint": str(out),
        "epochs": args.epochs,
        "final_loss": history[-1] if history else None,
        "seconds": round(time.time() - t0, 1),
        "data": summary,
    }
