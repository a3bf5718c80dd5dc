"""Loading pre-trained weights from a local path (never downloaded): Hugging Face folders or files
(``model.safetensors`` / ``pytorch_model.bin``) and the original projects' checkpoints (fairseq
wav2vec 2.0 ``.pt``, the AST repository's ``.pth``, PANNs ``.pth``).

Each recipe maps the checkpoint's names onto its own modules (``rename``) and loads them with every
shape checked; a checkpoint that does not fit says which tensors are missing or have another shape,
and which recipe settings to change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

import torch


class PretrainedError(ValueError):
    pass


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or a Hugging Face model folder."""
    p = Path(path)
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise PretrainedError(f"--pretrained {path}: a folder without model.safetensors or pytorch_model.bin")
    if not p.is_file():
        raise PretrainedError(f"--pretrained {path}: no such file or folder")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise PretrainedError(
                "reading .safetensors needs the safetensors package: pip install safetensors"
            ) from None
        return load_file(str(p))
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise PretrainedError(f"--pretrained {path}: cannot read it as a PyTorch checkpoint ({e})") from None
    # original projects wrap the weights: {"model": ...} (fairseq, PANNs), {"state_dict": ...}
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedError(f"--pretrained {path}: no tensor dictionary in it")
    return obj


def _under(sd: dict[str, torch.Tensor], anchor: str) -> dict[str, torch.Tensor]:
    """The keys below the prefix that ``anchor`` (a key suffix) reveals, with the prefix removed
    (``module.``, ``wav2vec2.``, ``w2v_encoder.w2v_model.``, ``audio_spectrogram_transformer.``, ...)."""
    hits = [k for k in sd if k.endswith(anchor)]
    if not hits:
        return {}
    prefix = hits[0][: -len(anchor)]
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def read_layout(
    path: str | Path, hf_anchor: str, original_anchor: str, what: str
) -> tuple[dict[str, torch.Tensor], bool]:
    """A checkpoint's tensors with any wrapper prefix removed, and whether it has the Hugging Face
    layout (``hf_anchor`` found) rather than the original project's (``original_anchor``)."""
    sd = read_state_dict(path)
    hf = _under(sd, hf_anchor)
    if hf:
        return hf, True
    orig = _under(sd, original_anchor)
    if not orig:
        raise PretrainedError(f"{path}: not a {what} checkpoint (neither {hf_anchor} nor {original_anchor} in it)")
    return orig, False


def rename(sd: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply regex (pattern, replacement) rules to every key, first match wins; keys no rule
    matches are kept as they are."""
    out = {}
    for k, v in sd.items():
        for pat, rep in rules:
            if re.fullmatch(pat, k):
                k = re.sub(pat, rep, k)
                break
        out[k] = v
    return out


def weight_norm_to_weight(sd: dict[str, torch.Tensor], prefix: str, dim: int = 2) -> dict[str, torch.Tensor]:
    """Fold a weight-normalised conv (``weight_g``/``weight_v``, or torch's parametrization
    ``original0``/``original1``) into a plain ``weight``: w = g * v / ||v|| over all axes but ``dim``."""
    sd = dict(sd)
    pairs = [
        (prefix + "weight_g", prefix + "weight_v"),
        (prefix + "parametrizations.weight.original0", prefix + "parametrizations.weight.original1"),
    ]
    for gk, vk in pairs:
        if gk in sd and vk in sd:
            g, v = sd.pop(gk), sd.pop(vk)
            axes = [a for a in range(v.dim()) if a != dim]
            sd[prefix + "weight"] = g * v / v.norm(dim=axes, keepdim=True).clamp_min(1e-12)
    return sd


def load_matching(
    module: torch.nn.Module,
    sd: dict[str, torch.Tensor],
    what: str,
    hint: str = "",
    ignore: Callable[[str], bool] = lambda k: False,
    adapt: Optional[Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> dict[str, int]:
    """Load ``sd`` into ``module``: every module tensor must be present with its shape (``adapt``
    may reshape one, e.g. position embeddings); checkpoint tensors the module has no use for are
    counted. Raises PretrainedError naming the mismatches."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not ignore(k)]
    fixed, wrong = {}, []
    for k, t in own.items():
        if k not in sd:
            continue
        v = sd[k]
        if adapt is not None and v.shape != t.shape:
            v = adapt(k, v, t)
        if v.shape != t.shape:
            wrong.append(f"{k}: checkpoint {tuple(v.shape)}, model {tuple(t.shape)}")
        else:
            fixed[k] = v.to(t.dtype)
    if missing or wrong:
        lines = (
            [f"missing {len(missing)}: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"] if missing else []
        ) + (
            [f"shape differs for {len(wrong)}: {'; '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''}"]
            if wrong
            else []
        )
        raise PretrainedError(
            f"{what}: the checkpoint does not fit the model ({' / '.join(lines)}){'; ' + hint if hint else ''}"
        )
    module.load_state_dict(fixed, strict=False)
    return {"loaded": len(fixed), "unused": len([k for k in sd if k not in own])}


def parse_pretrained(values: list[str], slots: tuple[str, ...]) -> dict[str, str]:
    """``--pretrained PATH`` (a recipe with one pre-trained part) or ``--pretrained NAME=PATH``."""
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            if len(slots) != 1:
                raise PretrainedError(
                    f"--pretrained {v}: this recipe has several pre-trained parts; say which: "
                    + ", ".join(f"{s}=PATH" for s in slots)
                )
            name, path = slots[0], v
        if name not in slots:
            raise PretrainedError(
                f"--pretrained {v}: unknown part {name!r}; this recipe takes {', '.join(slots) or 'none'}"
            )
        out[name] = path
    return out
