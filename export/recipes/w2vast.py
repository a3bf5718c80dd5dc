"""Recipe ``w2v-ast``: fusion of two pre-trained audio representations ("Anomalous sound detection
based on pre-trained models with different audio representations").

- Waveform branch: a wav2vec 2.0 encoder (convolutional feature encoder, positional convolution,
  transformer) with attentive statistics pooling: the attention-weighted mean and standard
  deviation over frames, (batch, 2, hidden).
- Spectrogram branch: an Audio Spectrogram Transformer on Kaldi fbank (128 bands, 25/10 ms, the
  AudioSet normalisation); its CLS token, (batch, 1, hidden).
- The two stacked along the second axis, (batch, 3, hidden), and fused by a small CNN into one
  embedding, trained with ArcFace.
- Two such sub-systems, trained on different labels: (1) machine type, (2) machine type x attribute
  combination (the joint class). The bundle's embedding is the L2-normalised
  (1 - w) x e1 + w x e2 of the two normalised sub-system embeddings (w = 0.65).
- Speed perturbation (0.9, 1.0, 1.1) as augmentation. Back end as published: 16 source k-means
  centres + all target samples, smallest cosine distance (the runtime's default bank).

Modules carry the Hugging Face names (``Wav2Vec2Model``, ``ASTModel``), so their checkpoints load
with prefixes stripped; fairseq wav2vec 2.0 and the AST repository's checkpoints are renamed on
load (``load_wav2vec2``, ``load_ast``). The defaults are the base models (wav2vec2-base, AST
base 10-10); smaller settings are for CPUs and tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.frontend import FeatureSpec, Frontend

from .base import WindowedConfig


@dataclass
class W2VASTConfig(WindowedConfig):
    sample_rate: int = 16000
    window_seconds: float = 2.0
    n_fft: int = 400  # the AST fbank frame (25 ms); ``frames`` is the fbank frame count
    hop: int = 160  # 10 ms
    n_mels: int = 128
    # wav2vec 2.0 (base)
    w2v_conv_dim: list = field(default_factory=lambda: [512] * 7)
    w2v_conv_kernel: list = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    w2v_conv_stride: list = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])
    w2v_conv_bias: bool = False
    w2v_hidden: int = 768
    w2v_layers: int = 12
    w2v_heads: int = 12
    w2v_ffn: int = 3072
    w2v_pos_kernel: int = 128
    w2v_pos_groups: int = 16
    w2v_stable_layer_norm: bool = False  # True for the large (lv60) models: layer-norm convs, pre-LN layers
    # Audio Spectrogram Transformer (base, strides 10 x 10)
    ast_hidden: int = 768
    ast_layers: int = 12
    ast_heads: int = 12
    ast_mlp: int = 3072
    ast_patch: int = 16
    ast_fstride: int = 10
    ast_tstride: int = 10
    ast_mean: float = -4.2677393  # AudioSet fbank statistics the AST checkpoints expect
    ast_std: float = 4.5689974
    # fusion and sub-systems
    fusion_channels: int = 32
    embedding_dim: int = 256
    weight: float = 0.65  # w: share of sub-system 2 (machine type x attribute)
    dropout: float = 0.1

    def frontend(self) -> Frontend:
        return Frontend(self.sample_rate, self.window_samples, (
            FeatureSpec("waveform", "waveform"),
            FeatureSpec("fbank", "fbank", n_mels=self.n_mels, frame_ms=1000 * self.n_fft / self.sample_rate,
                        shift_ms=1000 * self.hop / self.sample_rate),
        ))

    @property
    def ast_grid(self) -> tuple[int, int]:
        f = (self.n_mels - self.ast_patch) // self.ast_fstride + 1
        t = (self.frames - self.ast_patch) // self.ast_tstride + 1
        if t < 1:
            raise ValueError(f"a {self.window_seconds} s window has {self.frames} fbank frames, fewer than one AST patch")
        return f, t


def attention(x, q_proj, k_proj, v_proj, out_proj, heads: int, dropout: float, training: bool):
    """Multi-head self-attention written out (exports to plain ONNX operators)."""
    b, s, d = x.shape
    hd = d // heads
    q = q_proj(x).reshape(b, s, heads, hd).transpose(1, 2) * hd ** -0.5
    k = k_proj(x).reshape(b, s, heads, hd).transpose(1, 2)
    v = v_proj(x).reshape(b, s, heads, hd).transpose(1, 2)
    att = F.dropout(torch.softmax(q @ k.transpose(-2, -1), dim=-1), dropout, training)
    return out_proj((att @ v).transpose(1, 2).reshape(b, s, d))


# -- wav2vec 2.0 ------------------------------------------------------------------------------------
class ConvLayer(nn.Module):
    def __init__(self, cin, cout, k, s, bias, norm: str):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, s, bias=bias)
        self.norm = norm
        if norm == "group":
            self.layer_norm = nn.GroupNorm(cout, cout)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(cout)

    def forward(self, x):
        x = self.conv(x)
        if self.norm == "group":
            x = self.layer_norm(x)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class FeatureEncoder(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        layers, cin = [], 1
        for i, (d, k, s) in enumerate(zip(c.w2v_conv_dim, c.w2v_conv_kernel, c.w2v_conv_stride)):
            norm = "layer" if c.w2v_stable_layer_norm else ("group" if i == 0 else "none")
            layers.append(ConvLayer(cin, d, k, s, c.w2v_conv_bias, norm))
            cin = d
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wav):  # (B, N) -> (B, C, T)
        x = wav[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(c.w2v_conv_dim[-1], eps=1e-5)
        self.projection = nn.Linear(c.w2v_conv_dim[-1], c.w2v_hidden)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        return self.dropout(self.projection(self.layer_norm(x)))


class PositionalConv(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        # weight-normalised in the original; a plain weight here (checkpoints are folded on load)
        self.conv = nn.Conv1d(c.w2v_hidden, c.w2v_hidden, c.w2v_pos_kernel, padding=c.w2v_pos_kernel // 2, groups=c.w2v_pos_groups)
        self.trim = 1 if c.w2v_pos_kernel % 2 == 0 else 0

    def forward(self, x):  # (B, T, H)
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)


class W2VAttention(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        return attention(x, self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.heads, self.dropout, self.training)


class W2VFeedForward(nn.Module):
    def __init__(self, d, ffn, dropout):
        super().__init__()
        self.intermediate_dense = nn.Linear(d, ffn)
        self.output_dense = nn.Linear(ffn, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.output_dense(self.dropout(F.gelu(self.intermediate_dense(x)))))


class W2VLayer(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        self.pre_ln = c.w2v_stable_layer_norm
        self.attention = W2VAttention(c.w2v_hidden, c.w2v_heads, c.dropout)
        self.layer_norm = nn.LayerNorm(c.w2v_hidden, eps=1e-5)
        self.feed_forward = W2VFeedForward(c.w2v_hidden, c.w2v_ffn, c.dropout)
        self.final_layer_norm = nn.LayerNorm(c.w2v_hidden, eps=1e-5)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        if self.pre_ln:
            x = x + self.dropout(self.attention(self.layer_norm(x)))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(self.attention(x)))
        return self.final_layer_norm(x + self.feed_forward(x))


class W2VEncoder(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        self.pre_ln = c.w2v_stable_layer_norm
        self.pos_conv_embed = PositionalConv(c)
        self.layer_norm = nn.LayerNorm(c.w2v_hidden, eps=1e-5)
        self.layers = nn.ModuleList([W2VLayer(c) for _ in range(c.w2v_layers)])
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        x = x + self.pos_conv_embed(x)
        if not self.pre_ln:
            x = self.layer_norm(x)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x) if self.pre_ln else x


class Wav2Vec2(nn.Module):
    """wav2vec 2.0 (Baevski et al. 2020) without the pre-training quantiser: waveform -> frames (B, T, H)."""

    def __init__(self, c: W2VASTConfig):
        super().__init__()
        self.feature_extractor = FeatureEncoder(c)
        self.feature_projection = FeatureProjection(c)
        self.encoder = W2VEncoder(c)

    def forward(self, wav):
        # zero mean, unit variance per window, as the checkpoints' feature extractor normalises
        wav = (wav - wav.mean(dim=1, keepdim=True)) / torch.sqrt(wav.var(dim=1, keepdim=True) + 1e-7)
        return self.encoder(self.feature_projection(self.feature_extractor(wav).transpose(1, 2)))


class AttentiveStatsPooling(nn.Module):
    """Attention-weighted mean and standard deviation over frames: (B, T, H) -> (B, 2, H)."""

    def __init__(self, d: int, bottleneck: int = 128):
        super().__init__()
        self.attn = nn.Sequential(nn.Linear(d, bottleneck), nn.Tanh(), nn.Linear(bottleneck, d))

    def forward(self, x):
        a = torch.softmax(self.attn(x), dim=1)
        mu = (a * x).sum(dim=1)
        sd = torch.sqrt(((a * x * x).sum(dim=1) - mu * mu).clamp_min(1e-6))
        return torch.stack([mu, sd], dim=1)


# -- Audio Spectrogram Transformer --------------------------------------------------------------------
class PatchEmbeddings(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        self.projection = nn.Conv2d(1, c.ast_hidden, c.ast_patch, (c.ast_fstride, c.ast_tstride))

    def forward(self, fbank):  # (B, T, F) -> (B, patches, H), frequency-major as AST
        return self.projection(fbank[:, None].transpose(2, 3)).flatten(2).transpose(1, 2)


class ASTEmbeddings(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        f, t = c.ast_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.ast_hidden))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, c.ast_hidden))
        self.position_embeddings = nn.Parameter(torch.zeros(1, f * t + 2, c.ast_hidden))
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.patch_embeddings = PatchEmbeddings(c)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, fbank):
        x = self.patch_embeddings(fbank)
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.distillation_token.expand(b, -1, -1), x], dim=1)
        return self.dropout(x + self.position_embeddings)


class _SelfAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class _Dense(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.dense = nn.Linear(a, b)


class ASTAttention(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.attention, self.output = _SelfAttention(d), _Dense(d, d)
        self.heads, self.dropout = heads, dropout

    def forward(self, x):
        a = self.attention
        return attention(x, a.query, a.key, a.value, self.output.dense, self.heads, self.dropout, self.training)


class ASTLayer(nn.Module):
    """Pre-norm ViT block (names as Hugging Face's ASTLayer)."""

    def __init__(self, c: W2VASTConfig):
        super().__init__()
        d = c.ast_hidden
        self.layernorm_before = nn.LayerNorm(d, eps=1e-12)
        self.attention = ASTAttention(d, c.ast_heads, c.dropout)
        self.layernorm_after = nn.LayerNorm(d, eps=1e-12)
        self.intermediate = _Dense(d, c.ast_mlp)
        self.output = _Dense(c.ast_mlp, d)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        x = x + self.dropout(self.attention(self.layernorm_before(x)))
        return x + self.dropout(self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x)))))


class _Layers(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        self.layer = nn.ModuleList([ASTLayer(c) for _ in range(c.ast_layers)])


class AST(nn.Module):
    """Audio Spectrogram Transformer (Gong et al. 2021): Kaldi fbank (B, T, F) -> CLS token (B, H)."""

    def __init__(self, c: W2VASTConfig):
        super().__init__()
        self.c = c
        self.embeddings = ASTEmbeddings(c)
        self.encoder = _Layers(c)
        self.layernorm = nn.LayerNorm(c.ast_hidden, eps=1e-12)

    def forward(self, fbank):
        x = self.embeddings((fbank - self.c.ast_mean) / (2 * self.c.ast_std))
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)[:, 0]


# -- fusion -----------------------------------------------------------------------------------------
class FusionCNN(nn.Module):
    """(B, 3, H): wav2vec 2.0 mean and std rows, AST CLS row -> embedding."""

    def __init__(self, h: int, channels: int, dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(3, channels, 3, 1, 1, bias=False), nn.BatchNorm1d(channels), nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, 3, 2, 1, bias=False), nn.BatchNorm1d(channels), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(channels * ((h + 1) // 2), dim)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


class SubSystem(nn.Module):
    def __init__(self, c: W2VASTConfig):
        super().__init__()
        self.wav2vec2 = Wav2Vec2(c)
        self.pooling = AttentiveStatsPooling(c.w2v_hidden)
        self.ast = AST(c)
        # the two representations are stacked row-wise, so AST's CLS is projected when the sizes differ
        self.ast_proj = nn.Linear(c.ast_hidden, c.w2v_hidden) if c.ast_hidden != c.w2v_hidden else nn.Identity()
        self.fusion = FusionCNN(c.w2v_hidden, c.fusion_channels, c.embedding_dim)

    def forward(self, wav, fbank):
        w = self.pooling(self.wav2vec2(wav))  # (B, 2, H)
        a = self.ast_proj(self.ast(fbank))[:, None]  # (B, 1, H)
        return self.fusion(torch.cat([w, a], dim=1))


class W2VASTNet(nn.Module):
    input_names = ("waveform", "fbank")
    targets = ("machine", "joint")  # sub-system 1, sub-system 2
    default_loss = "arcface"
    speed_perturb = (0.9, 1.0, 1.1)
    pretrained_slots = ("wav2vec2", "ast")

    def __init__(self, cfg: W2VASTConfig):
        super().__init__()
        if cfg.w2v_hidden % cfg.w2v_heads or cfg.ast_hidden % cfg.ast_heads:
            raise ValueError("hidden sizes must be multiples of the head counts")
        if not 0.0 <= cfg.weight <= 1.0:
            raise ValueError(f"weight must be within 0..1, got {cfg.weight}")
        cfg.ast_grid  # noqa: B018 - fails early for a window shorter than one patch
        self.cfg = cfg
        self.sub1 = SubSystem(cfg)  # machine type
        self.sub2 = SubSystem(cfg)  # machine type x attribute

    @property
    def embedding_dim(self) -> int:
        return self.cfg.embedding_dim

    def target_embeddings(self, wav, fbank) -> dict:
        return {"machine": self.sub1(wav, fbank), "joint": self.sub2(wav, fbank)}

    def raw_embedding(self, wav, fbank):
        w = self.cfg.weight
        return (1 - w) * F.normalize(self.sub1(wav, fbank), dim=1) + w * F.normalize(self.sub2(wav, fbank), dim=1)

    def forward(self, waveform, fbank):
        return F.normalize(self.raw_embedding(waveform, fbank), dim=1)

    def load_pretrained(self, name: str, path: str) -> dict:
        """The same pre-trained weights into both sub-systems (each is then fine-tuned on its labels)."""
        info = {}
        for sub in (self.sub1, self.sub2):
            info = load_wav2vec2(sub.wav2vec2, path) if name == "wav2vec2" else load_ast(sub.ast, path, self.cfg)
        return info


# -- checkpoint loading -----------------------------------------------------------------------------
W2V_HINT = ("set w2v_* in --recipe-config to the checkpoint's sizes (base: the defaults; large: w2v_hidden 1024, w2v_layers 24, "
            "w2v_heads 16, w2v_ffn 4096, w2v_stable_layer_norm true, w2v_conv_bias true)")
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


def load_wav2vec2(module: Wav2Vec2, path: str) -> dict:
    """Hugging Face (Wav2Vec2Model, ForPreTraining, ForCTC, ...) or fairseq wav2vec 2.0 weights."""
    from ..pretrained import load_matching, read_layout, rename, weight_norm_to_weight

    sd, hf = read_layout(path, "feature_extractor.conv_layers.0.conv.weight", "feature_extractor.conv_layers.0.0.weight", "wav2vec 2.0")
    if not hf:
        sd = rename(sd, FAIRSEQ_W2V)
    sd = weight_norm_to_weight(sd, "encoder.pos_conv_embed.conv.", dim=2)
    return load_matching(module, sd, f"wav2vec 2.0 checkpoint {path}", W2V_HINT)


def load_ast(module: AST, path: str, cfg: W2VASTConfig) -> dict:
    """Hugging Face ASTModel / ASTForAudioClassification or the AST repository's weights. Position
    embeddings trained on another input length are cut to this window's patch grid from the middle
    (shorter windows, as the AST code does) or interpolated (longer ones)."""
    from ..pretrained import load_matching, read_layout, rename

    sd, hf = read_layout(path, "embeddings.patch_embeddings.projection.weight", "v.patch_embed.proj.weight", "Audio Spectrogram Transformer")
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
            grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(f, t), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        return torch.cat([v[:, :2], grid.reshape(1, f * t, -1)], dim=1)

    return load_matching(module, sd, f"AST checkpoint {path}", AST_HINT, adapt=adapt)


def count_parameters(cfg: W2VASTConfig) -> dict[str, int]:
    m = W2VASTNet(cfg)
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {"wav2vec2": n(m.sub1.wav2vec2), "ast": n(m.sub1.ast), "fusion": n(m.sub1.fusion) + n(m.sub1.pooling), "total": n(m)}

