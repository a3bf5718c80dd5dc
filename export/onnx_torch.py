"""A bundle's ONNX graph as a trainable PyTorch module, for field adaptation (``export/adapt.py``).

Every bundle keeps only its ONNX graph, not its training checkpoint, so adaptation starts from the
graph: its nodes run in order as PyTorch operations, its float weights become parameters (batch-norm
statistics stay buffers), and the module exports back to ONNX with the same inputs and outputs.
onnx2torch does this in general, but it requires torchvision, whose wheels pull a CUDA build of torch
over the pinned CPU one; the operators the dualbranch bundles (``default``, ``fast``) are made of are
few, so they are interpreted here. A graph with another operator is refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}  # broadcast their inputs, as numpy does


class UnsupportedGraph(ValueError):
    pass


def _pads(pads, n):
    """ONNX pads (all begins, then all ends) -> (symmetric padding or None, F.pad list)."""
    pads = list(pads or [0] * (2 * n))
    begin, end = pads[:n], pads[n:]
    if begin == end:
        return begin, None
    return [0] * n, [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]


def _conv(x, w, b=None, *, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET", **_):
    n = w.dim() - 2
    if auto_pad not in ("NOTSET", b"NOTSET"):
        raise UnsupportedGraph(f"Conv with auto_pad {auto_pad!r}")
    sym, asym = _pads(pads, n)
    if asym is not None:
        x = F.pad(x, asym)
    conv = F.conv1d if n == 1 else F.conv2d
    return conv(x, w, b, list(strides or [1] * n), sym, list(dilations or [1] * n), group)


def _maxpool(x, *, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0, **_):
    n = len(kernel_shape)
    sym, asym = _pads(pads, n)
    if asym is not None:
        x = F.pad(x, asym, value=float("-inf"))
    pool = F.max_pool1d if n == 1 else F.max_pool2d
    return pool(x, list(kernel_shape), list(strides or kernel_shape), sym, list(dilations or [1] * n), bool(ceil_mode))


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    y = alpha * ((a.t() if transA else a) @ (b.t() if transB else b))
    return y + beta * c if c is not None else y


def _reduce(fn):
    def run(x, *, axes=None, keepdims=1, **_):
        dims = list(axes) if axes is not None else list(range(x.dim()))
        return fn(x, dims, bool(keepdims))

    return run


OPS = {
    "Relu": lambda x: F.relu(x),
    "Sigmoid": torch.sigmoid,
    "Log": torch.log,
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": torch.div,
    "Gemm": _gemm,
    "Conv": _conv,
    "MaxPool": _maxpool,
    "BatchNormalization": lambda x, s, b, m, v, *, epsilon=1e-5, **_: F.batch_norm(x, m, v, s, b, False, 0.0, epsilon),
    "ReduceMean": _reduce(lambda x, d, k: x.mean(dim=d, keepdim=k)),
    "ReduceMax": _reduce(lambda x, d, k: x.amax(dim=d, keepdim=k)),
    "ReduceL2": _reduce(lambda x, d, k: torch.linalg.vector_norm(x, 2, dim=d, keepdim=k)),
    "Concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "Flatten": lambda x, *, axis=1: x.flatten(axis) if axis > 0 else x.reshape(1, -1),
    "Clip": lambda x, lo=None, hi=None: torch.clamp(x, lo, hi),
    "Shape": lambda x, **_: torch._shape_as_tensor(x),
    # axes: a constant input from opset 13 on, read when the graph is loaded
    "Unsqueeze": lambda x, *, axes: _unsqueeze(x, axes),
    # what F.normalize leaves: a norm expanded to its input's shape before a division; broadcasting does
    # the same and keeps the batch size free when the module is traced back to ONNX (checked at load)
    "Expand": lambda x: x,
}


def _unsqueeze(x, axes):
    for ax in sorted(a % (x.dim() + len(axes)) for a in axes):
        x = x.unsqueeze(ax)
    return x


class OnnxModule(torch.nn.Module):
    """Runs an ONNX graph node by node; float initializers are parameters (those a batch norm reads as
    its running statistics stay buffers), constants are buffers."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        g = model.graph
        known = {*OPS, "Constant"}  # constants become buffers
        unknown = sorted({n.op_type for n in g.node} - known)
        if unknown:
            raise UnsupportedGraph(
                f"adaptation can read graphs of {', '.join(sorted(known))}; this one also has {', '.join(unknown)}"
            )
        stats = {n.input[i] for n in g.node if n.op_type == "BatchNormalization" for i in (3, 4)}
        self.names: dict[str, str] = {}  # ONNX value name -> attribute holding it
        for i, t in enumerate(g.initializer):
            a = numpy_helper.to_array(t)
            self._keep(t.name, f"w{i}", a, trainable=a.dtype.kind == "f" and t.name not in stats)
        for i, n in enumerate(g.node):
            if n.op_type == "Constant":
                self._keep(n.output[0], f"c{i}", numpy_helper.to_array(n.attribute[0].t), trainable=False)
        consumers: dict[str, set[str]] = {}
        for n in g.node:
            for x in n.input:
                consumers.setdefault(x, set()).add(n.op_type)
        self.nodes = []
        for n in g.node:
            if n.op_type == "Constant":
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            ins = list(n.input)
            if n.op_type == "Unsqueeze" and len(ins) > 1:
                attrs["axes"] = [int(v) for v in self._constant(ins.pop(1))]
            if n.op_type == "Expand":  # the shape input is dropped: only broadcasting consumers may follow
                if not consumers.get(n.output[0], set()) <= ELEMENTWISE:
                    raise UnsupportedGraph("Expand feeding an operator that does not broadcast")
                ins = ins[:1]
            self.nodes.append((n.op_type, ins, list(n.output), attrs))
        self.input_names = [i.name for i in g.input if i.name not in self.names]
        self.output_names = [o.name for o in g.output]

    def _keep(self, name: str, attr: str, value: np.ndarray, trainable: bool) -> None:
        t = torch.from_numpy(np.array(value, copy=True))
        if trainable:
            self.register_parameter(attr, torch.nn.Parameter(t))
        else:
            self.register_buffer(attr, t)
        self.names[name] = attr

    def _constant(self, name: str) -> np.ndarray:
        return getattr(self, self.names[name]).numpy()

    def forward(self, *inputs):
        env = dict(zip(self.input_names, inputs))
        for op, ins, outs, attrs in self.nodes:
            args = [env[x] if x in env else getattr(self, self.names[x]) if x else None for x in ins]
            while args and args[-1] is None:  # omitted optional inputs at the end
                args.pop()
            env[outs[0]] = OPS[op](*args, **attrs)
        out = [env[o] for o in self.output_names]
        return out[0] if len(out) == 1 else tuple(out)


def torch_model(path) -> OnnxModule:
    """The ONNX model at ``path`` as a trainable module."""
    return OnnxModule(onnx.load(str(path)))
