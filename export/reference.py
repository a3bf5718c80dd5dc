"""Training-free reference bundles, for the quality benchmark.

They are ordinary bundles (ONNX + manifest) with no trained weights, so they are scored by exactly
the same front end, engine, bank, k-NN and evaluation code as a trained model:

- ``logmel-stats``: log-mel spectrogram (128 bands, 1024/512) of the whole window; the embedding is
  the mean and the standard deviation of each band over time (256 values).
- ``spectrum``: the whole-window magnitude spectrum, log-compressed (log(1 + |X|)).

Built with the ``onnx`` helper API (no torch needed).
"""

from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from edge_agent.model.bundle import write_manifest
from edge_agent.model.frontend import FeatureSpec, Frontend
from edge_agent.model.manifest import Manifest, Tensor

REFERENCES = ("logmel-stats", "spectrum")
OPSET = 17


def _logmel_stats_graph(frames: int, bands: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", frames, bands])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 2 * bands])
    nodes = [  # opset 17: ReduceMean takes its axes as an attribute
        helper.make_node("ReduceMean", ["logmel"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["logmel", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1], keepdims=0),
        helper.make_node("Sqrt", ["var"], ["std"]),
        helper.make_node("ReduceMean", ["logmel"], ["mean2"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["mean2", "std"], ["embedding"], axis=1),
    ]
    g = helper.make_graph(nodes, "logmel_stats", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)  # IR 8 goes with opset 17


def _spectrum_graph(bins: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("spectrum", TensorProto.FLOAT, ["batch", bins])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", bins])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [helper.make_node("Add", ["spectrum", "one"], ["p1"]), helper.make_node("Log", ["p1"], ["embedding"])]
    g = helper.make_graph(nodes, "log_spectrum", [x], [y], initializer=[one])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)  # IR 8 goes with opset 17


def build_reference(kind: str, out_dir: str | Path, window_seconds: float = 10.0, sample_rate: int = 16000) -> Path:
    out_dir = Path(out_dir)
    n = int(round(window_seconds * sample_rate))
    if kind == "logmel-stats":
        spec = FeatureSpec("logmel", "logmel", n_fft=1024, hop=512, n_mels=128)
        frames, bands = spec.shape(n)
        model, dim = _logmel_stats_graph(frames, bands), 2 * bands
    elif kind == "spectrum":
        spec = FeatureSpec("spectrum", "spectrum")
        model, dim = _spectrum_graph(n // 2), n // 2
    else:
        raise ValueError(f"unknown reference {kind!r}; use one of {', '.join(REFERENCES)}")
    onnx.checker.check_model(model)
    fe = Frontend(sample_rate, n, (spec,))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    onnx.save(model, out_dir / "model.onnx")
    write_manifest(
        out_dir,
        Manifest(
            name=f"reference-{kind}",
            version="1",
            recipe=f"reference:{kind}",
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            opset=OPSET,
            sample_rate=sample_rate,
            window_seconds=window_seconds,
            frontend=fe,
            inputs=[Tensor(name=spec.name, shape=[-1, *spec.shape(n)])],
            outputs=[Tensor(name="embedding", shape=[-1, dim])],
            embedding_dim=dim,
            training={"data": {"note": "training-free reference"}},
        ),
    )
    return out_dir
