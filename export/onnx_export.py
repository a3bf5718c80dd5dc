"""``edge-agent export``: a training checkpoint -> a model bundle (ONNX + manifest).

The ONNX graph takes the front end's features (the manifest lists them) with a dynamic batch axis
and returns the L2-normalised embedding. Parity is checked on real clips: the same windows through
PyTorch and through ONNX Runtime must agree to ``tolerance`` (max absolute difference).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from edge_agent.audio.clips import clip_windows
from edge_agent.model.bundle import write_manifest, write_training_clips
from edge_agent.model.manifest import Manifest, Score, Tensor
from edge_agent.state.atomic import atomic_dir
from export.recipes import build_model
from export.recipes.base import Recipe
from export.train import load_checkpoint

OPSET = 17
DEFAULT_PARITY_CLIPS = Path(__file__).resolve().parent.parent / "edge_agent" / "demo_clips"


class ParityError(Exception):
    pass


def load_model(checkpoint: str | Path):
    ck = load_checkpoint(checkpoint)
    model, cfg = build_model(ck["recipe"], ck["config"])
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return model, cfg, ck


class Ensemble(Recipe, torch.nn.Module):
    """Several trained members of one recipe behind one front end. The embedding is the members'
    L2-normalised embeddings concatenated and scaled by 1/sqrt(n), so it is unit length and its
    cosine similarity is the mean of the members' similarities: k-NN on it averages the members."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.input_names = members[0].input_names
        self.embedding_dim = sum(m.embedding_dim for m in members)

    def forward(self, *inputs):
        return torch.cat([m(*inputs) for m in self.members], dim=1) / len(self.members) ** 0.5


class WithClassifier(Recipe, torch.nn.Module):
    """A model plus its section classifier head: outputs (embedding, logits). The runtime can then
    score a machine the model was trained on by 1 - softmax(logits)[its class] (the STgram papers'
    score) instead of, or next to, the k-NN."""

    output_names = ("embedding", "logits")

    def __init__(self, model, head, classes):
        super().__init__()
        self.model, self.head, self.classes = model, head, list(classes)
        self.input_names = model.input_names
        self.embedding_dim = model.embedding_dim

    def forward(self, *inputs):
        raw = self.model.raw_embedding(*inputs)
        return torch.nn.functional.normalize(raw, dim=1), self.head.logits(raw)

    def heads(self, ck: dict) -> dict:
        return {"classifier": {"output": "logits", "classes": self.classes}}


def attach_classifier(model, ck: dict):
    """WithClassifier for single-embedding models trained on section classes, else None."""
    if model.targets != ("section",) or model.embeddings_per_window != 1 or "section" not in ck.get("heads", {}):
        return None
    from export.losses import make_head

    head = make_head(ck["loss"], model.embedding_dim, len(ck["section_classes"]))
    head.load_state_dict(ck["heads"]["section"])
    return WithClassifier(model, head, ck["section_classes"]).eval()


def load_models(checkpoints: Sequence[str | Path]):
    """One checkpoint -> its model; several -> an Ensemble (same recipe and front end required)."""
    loaded = [load_model(c) for c in checkpoints]
    if not loaded:
        raise ValueError("no checkpoint given")
    model, cfg, ck = loaded[0]
    if len(loaded) == 1:
        return model, cfg, ck, [ck]
    if model.embeddings_per_window > 1 or len(model.output_names) > 1:
        raise ValueError(
            "ensembles of models with several embeddings per window or with score-head outputs are not supported"
        )
    for (_, c, k), path in zip(loaded[1:], checkpoints[1:]):
        if k["recipe"] != ck["recipe"] or c.frontend() != cfg.frontend():
            raise ValueError(f"{path}: ensemble members need the same recipe and front end as {checkpoints[0]}")
    return Ensemble([m for m, _, _ in loaded]).eval(), cfg, ck, [k for _, _, k in loaded]


def parity_windows(frontend, clips: Sequence[str | Path], max_windows: int = 8) -> np.ndarray:
    sr, n = frontend.sample_rate, frontend.window_samples
    wins = list(clip_windows(clips, sr, n, n, max_windows))
    if not wins:
        raise ParityError(f"no readable clips for the parity check in {', '.join(map(str, clips))}")
    return np.stack(wins)


def export_bundle(
    checkpoint: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    name: Optional[str] = None,
    version: Optional[str] = None,
    parity_clips: Sequence[str | Path] = (),
    tolerance: float = 1e-4,
    log=print,
) -> dict:
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    model, cfg, ck, members = load_models(checkpoints)
    classifier = attach_classifier(model, ck) if len(checkpoints) == 1 else None
    if classifier is not None:
        model = classifier
    outputs = list(model.output_names)
    heads = model.heads(ck)
    frontend = cfg.frontend()
    out_dir = Path(out_dir)
    clips = list(parity_clips) or [DEFAULT_PARITY_CLIPS]
    windows = parity_windows(frontend, clips)
    feats = frontend(windows)
    names = list(model.input_names)
    example = tuple(torch.from_numpy(feats[n][:2]) for n in names)

    with atomic_dir(out_dir) as tmp:
        onnx_path = tmp / "model.onnx"
        torch.onnx.export(
            model,
            example,
            str(onnx_path),
            input_names=names,
            output_names=outputs,
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={**{n: {0: "batch"} for n in names}, **{o: {0: "batch"} for o in outputs}},
        )
        import onnx

        onnx.checker.check_model(str(onnx_path))
        parity, ref_shapes = check_parity(model, onnx_path, feats, names)
        log(
            f"parity on {len(windows)} real windows: max |torch - onnxruntime| = {parity:.2e} (relative to outputs "
            f"above 1; tolerance {tolerance:.0e})"
        )
        if not parity <= tolerance:
            raise ParityError(
                f"ONNX output differs from PyTorch by {parity:.2e} > {tolerance:.0e}; the bundle was not written"
            )
        shape = lambda n: [-1] + list(feats[n].shape[1:])  # noqa: E731
        per_window = int(model.embeddings_per_window)
        # what every member learnt from, so that calibrate can tell when it is given the same clips
        heard = [fp for k in members for fp in k.get("clip_fingerprints", [])]
        manifest = write_manifest(
            tmp,
            Manifest(
                name=name or Path(out_dir).name,
                version=version or _dt.date.today().isoformat(),
                recipe=ck["recipe"],
                recipe_config=ck["config"],
                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                model_file="model.onnx",
                opset=OPSET,
                sample_rate=frontend.sample_rate,
                window_seconds=frontend.window_seconds,
                frontend=frontend,
                inputs=[Tensor(name=n, shape=shape(n)) for n in names],
                outputs=[Tensor(name=o, shape=[-1, *sh[1:]]) for o, sh in zip(outputs, ref_shapes)],
                # present when the bundle can score machines it was trained on by 1 - softmax(logits)[class]
                classifier=heads.get("classifier"),
                # score heads besides the k-NN that the outputs support (edge_agent.scoring.heads)
                heads=heads,
                embedding_dim=model.embedding_dim,
                # k-NN per embedding; a window's score is the mean over its embeddings. "head" is the
                # score calibrate uses unless told otherwise.
                score=Score(embeddings_per_window=per_window, head=model.default_head),
                training=write_training_clips(
                    tmp,
                    heard,
                    {
                        "data": ck.get("data_summary", {}),
                        "args": ck.get("train_args", {}),
                        "epochs": ck.get("epoch"),
                        "final_loss": (ck.get("loss_history") or [None])[-1],
                        "joint_classes": ck.get("joint_classes", []),
                        "section_classes": ck.get("section_classes", []),
                        "loss": ck.get("loss"),
                        # a distilled model: its teacher and how closely it reproduces it on held-out clips
                        "distillation": ck.get("distillation"),
                        "ensemble": [
                            {
                                "seed": k.get("train_args", {}).get("seed"),
                                "epochs": k.get("epoch"),
                                "final_loss": (k.get("loss_history") or [None])[-1],
                            }
                            for k in members
                        ]
                        if len(members) > 1
                        else None,
                    },
                ),
                parity_max_abs_diff=parity,
            ),
        )
    log(f"wrote bundle {out_dir} (model sha256 {manifest.files['model.onnx'][:12]}...)")
    return {"bundle": str(out_dir), "parity": parity, "manifest": manifest.to_json()}


def check_parity(model, onnx_path: Path, feats: dict[str, np.ndarray], names: Sequence[str]) -> tuple[float, list]:
    import onnxruntime as ort

    model.eval()  # the exporter restores the module's previous mode; the reference must use running statistics
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feats[n]) for n in names))
    ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: feats[n] for n in names})
    if len(got) != len(ref):
        raise ParityError(f"the ONNX model has {len(got)} outputs, PyTorch {len(ref)}")
    # relative to each output's scale (at least 1): embeddings are unit vectors, losses may be large
    return max(float(np.abs(r - g).max() / max(1.0, float(np.abs(r).max()))) for r, g in zip(ref, got)), [
        r.shape for r in ref
    ]
