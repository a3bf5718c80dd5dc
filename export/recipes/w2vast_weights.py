"""Pre-trained weights for ``w2vast``: Hugging Face and fairseq wav2vec 2.0, Hugging Face and the AST
repository's AST checkpoints, renamed to the modules' names and checked shape by shape."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from export.recipes.ast import AST

W2V_HINT = (
    "set w2v_* in --recipe-config to the checkpoint's sizes (base: the defaults; large: w2v_hidden 1024, "
    "w2v_layers 24, w2v_heads 16, w2v_ffn 4096, w2v_stable_layer_norm true, w2v_conv_bias true)"
)
AST_HINT = "set ast_* and n_mels in --recipe-config to the checkpoint's sizes (base 10-10: the defaults)"

FAIRSEQ_W2V = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.(.+)", r"encoder.pos_conv_embed.conv.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
]

ORIGINAL_AST = [
    (r"v\.cls_token", "embeddings.cls_token"),
    (r"v\.dist_token", "embeddings.distillation_token"),
    (r"v\.pos_embed", "embeddings.position_embeddings"),
    (r"v\.patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.projection.\1"),
    (r"v\.blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layer.\1.layernorm_before.\2"),
    (r"v\.blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layer.\1.layernorm_after.\2"),
    (r"v\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layer.\1.attention.output.dense.\2"),
    (r"v\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"encoder.layer.\1.intermediate.dense.\2"),
    (r"v\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"encoder.layer.\1.output.dense.\2"),
    (r"v\.norm\.(weight|bias)", r"layernorm.\1"),
]


def load_wav2vec2(module, path: str) -> dict:
    """Hugging Face (Wav2Vec2Model, ForPreTraining, ForCTC, ...) or fairseq wav2vec 2.0 weights."""
    from export.pretrained import load_matching, read_layout, rename, weight_norm_to_weight

    sd, hf = read_layout(
        path, "feature_extractor.conv_layers.0.conv.weight", "feature_extractor.conv_layers.0.0.weight", "wav2vec 2.0"
    )
    if not hf:
        sd = rename(sd, FAIRSEQ_W2V)
    sd = weight_norm_to_weight(sd, "encoder.pos_conv_embed.conv.", dim=2)
    return load_matching(module, sd, f"wav2vec 2.0 checkpoint {path}", W2V_HINT)


def load_ast(module: AST, path: str, cfg) -> dict:
    """Hugging Face ASTModel / ASTForAudioClassification or the AST repository's weights. Position
    embeddings trained on another input length are cut to this window's patch grid from the middle
    (shorter windows, as the AST code does) or interpolated (longer ones)."""
    from export.pretrained import load_matching, read_layout, rename

    sd, hf = read_layout(
        path,
        "embeddings.patch_embeddings.projection.weight",
        "v.patch_embed.proj.weight",
        "Audio Spectrogram Transformer",
    )
    if not hf:
        for k in [k for k in sd if k.endswith("attn.qkv.weight") or k.endswith("attn.qkv.bias")]:
            i, part = k.split(".")[2], k.rsplit(".", 1)[1]
            for name, t in zip(("query", "key", "value"), sd.pop(k).chunk(3, dim=0)):
                sd[f"encoder.layer.{i}.attention.attention.{name}.{part}"] = t
        sd = rename(sd, ORIGINAL_AST)
    f, t = cfg.ast_grid

    def adapt(key, v, own):
        if key != "embeddings.position_embeddings" or (v.shape[1] - 2) % f:
            return v
        tc = (v.shape[1] - 2) // f
        grid = v[:, 2:].reshape(1, f, tc, -1)
        if tc >= t:
            s = tc // 2 - t // 2
            grid = grid[:, :, s : s + t]
        else:
            grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(f, t), mode="bilinear", align_corners=False).permute(
                0, 2, 3, 1
            )
        return torch.cat([v[:, :2], grid.reshape(1, f * t, -1)], dim=1)

    return load_matching(module, sd, f"AST checkpoint {path}", AST_HINT, adapt=adapt)
