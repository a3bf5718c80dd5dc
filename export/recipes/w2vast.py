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

from edge_agent.model.frontend import FeatureSpec, Frontend
from export.recipes.ast import AST, attention
from export.recipes.base import Recipe, WindowedConfig


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
        return Frontend(
            self.sample_rate,
            self.window_samples,
            (
                FeatureSpec("waveform", "waveform"),
                FeatureSpec(
                    "fbank",
                    "fbank",
                    n_mels=self.n_mels,
                    frame_ms=1000 * self.n_fft / self.sample_rate,
                    shift_ms=1000 * self.hop / self.sample_rate,
                ),
            ),
        )

    @property
    def ast_grid(self) -> tuple[int, int]:
        f = (self.n_mels - self.ast_patch) // self.ast_fstride + 1
        t = (self.frames - self.ast_patch) // self.ast_tstride + 1
        if t < 1:
            raise ValueError(
                f"a {self.window_seconds} s window has {self.frames} fbank frames, fewer than one AST patch"
            )
        return f, t


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
        self.conv = nn.Conv1d(
            c.w2v_hidden, c.w2v_hidden, c.w2v_pos_kernel, padding=c.w2v_pos_kernel // 2, groups=c.w2v_pos_groups
        )
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
        return attention(
            x, self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.heads, self.dropout, self.training
        )


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
class FusionCNN(nn.Module):
    """(B, 3, H): wav2vec 2.0 mean and std rows, AST CLS row -> embedding."""

    def __init__(self, h: int, channels: int, dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(3, channels, 3, 1, 1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, 3, 2, 1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
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


class W2VASTNet(Recipe, nn.Module):
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
        from export.recipes.w2vast_weights import load_ast, load_wav2vec2

        info = {}
        for sub in (self.sub1, self.sub2):
            info = load_wav2vec2(sub.wav2vec2, path) if name == "wav2vec2" else load_ast(sub.ast, path, self.cfg)
        return info


def count_parameters(cfg: W2VASTConfig) -> dict[str, int]:
    m = W2VASTNet(cfg)
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {
        "wav2vec2": n(m.sub1.wav2vec2),
        "ast": n(m.sub1.ast),
        "fusion": n(m.sub1.fusion) + n(m.sub1.pooling),
        "total": n(m),
    }
