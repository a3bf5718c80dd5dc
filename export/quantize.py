"""``edge-agent quantize``: a bundle -> an INT8 copy for ONNX Runtime, calibrated on real windows.

Static quantisation (ONNX Runtime's ``quantize_static``, QDQ format, signed INT8 weights per
channel and activations, MinMax calibration) needs the range of every activation: those come from
the front end's features of real clips, cut as the runtime cuts them. The copy is an ordinary
bundle (same front end, same manifest with a ``quantization`` entry and a new sha256), so banks
made with the FP32 model are refused and the machine is calibrated again with the INT8 one.
Whether it is faster depends on the CPU (VNNI) and the model's size; whether it is as good is
for ``benchmarks/quality.py`` to say (docs/performance.md has both for the default model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge_agent.audio.clips import clip_windows
from edge_agent.model.bundle import Bundle, write_manifest, write_training_clips
from edge_agent.model.manifest import parse_manifest
from edge_agent.state.atomic import atomic_dir


def calibration_features(bundle: Bundle, clips: Sequence[str | Path], max_windows: int = 256) -> list[dict]:
    """The model inputs of up to ``max_windows`` real windows (hop 1 s), one window per entry."""
    fe = bundle.frontend
    out = [fe(w[None]) for w in clip_windows(clips, fe.sample_rate, fe.window_samples, fe.sample_rate, max_windows)]
    if not out:
        raise ValueError(f"no readable clips in {', '.join(map(str, clips))} to calibrate the quantisation on")
    return out


def quantize_bundle(bundle: Bundle, out_dir: str | Path, clips: Sequence[str | Path], max_windows: int = 256) -> Bundle:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feats = calibration_features(bundle, clips, max_windows)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feats)

        def get_next(self):
            return next(self.it, None)

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        pre = tmp / "pre.onnx"
        quant_pre_process(str(bundle.model_path), str(pre))  # shape inference + graph folding, as ORT advises
        quantize_static(
            str(pre),
            str(tmp / "model.onnx"),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        pre.unlink()
        for extra in tmp.glob("*.data"):  # external-data leftovers of the pre-processing, if any
            extra.unlink()
        m = bundle.manifest.to_json()
        # the same weights, quantised: the same training clips
        m["training"] = write_training_clips(tmp, bundle.trained_on(), m.get("training", {}))
        m.update(
            name=f"{bundle.name}-int8",
            version=f"{bundle.version}+int8",
            model_file="model.onnx",
            files={},
            quantization={
                "kind": "int8-static-qdq",
                "from": {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256},
                "calibration_windows": len(feats),
                "per_channel": True,
            },
        )
        write_manifest(tmp, parse_manifest(m))
        q = Bundle.load(tmp)
        # the quantised model must still give unit-length embeddings of the right size
        from edge_agent.engine import OnnxEngine

        e = OnnxEngine(q, "cpu").embed(feats[0])
        if e.shape[1] != bundle.embedding_dim or not np.all(np.isfinite(e)):
            raise ValueError("the quantised model does not give finite embeddings of the bundle's size")
    return Bundle.load(out_dir)
