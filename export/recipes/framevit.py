"""Recipe ``framevit``: the frame-sequence vision transformer of "Vision Transformer based
embeddings extractor for unsupervised anomalous sound detection under domain generalization".

- Log-mel spectrogram, 128 bands, STFT frame 1024 samples (64 ms at 16 kHz), hop 50 %.
- Tokens are single time frames, linearly embedded, with learned position embeddings and a
  learnable classification token. Inputs are context windows of P = 64 frames shifted by L = 4
  frames: a window of T frames gives N = ceil((T - P) / L) embeddings.
- Transformer encoder: 12 layers, hidden 384, MLP 1536, 6 heads (about 22 M parameters) as
  published; smaller configurations for the edge and for tests.
- ArcFace on machine/section classes, Adam (lr 1e-5 published), batch 128, mixup alpha 0.5.
- Score: for each of the N context windows the cosine distance to the nearest bank entry, averaged
  over the N windows. The bundle declares ``embeddings_per_window = N``; the runtime's bank keeps
  one entry per context window and averages per window.

The attention is written out (linear q/k/v, softmax) rather than nn.TransformerEncoder so that it
exports to plain ONNX operators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.model.frontend import FeatureSpec, Frontend
from export.recipes.base import Recipe, WindowedConfig


@dataclass
class FrameViTConfig(WindowedConfig):
    sample_rate: int = 16000
    window_seconds: float = 4.0
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 128
    context: int = 64  # P
    shift: int = 4  # L
    layers: int = 12
    hidden: int = 384
    mlp: int = 1536
    heads: int = 6
    dropout: float = 0.1

    @property
    def n_context(self) -> int:
        if self.frames < self.context:
            raise ValueError(
                f"a {self.window_seconds} s window has {self.frames} frames, fewer than the context of {self.context}"
            )
        return max(1, math.ceil((self.frames - self.context) / self.shift))

    def frontend(self) -> Frontend:
        return Frontend(
            self.sample_rate,
            self.window_samples,
            (FeatureSpec("logmel", "logmel", n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels),),
        )


class Block(nn.Module):
    """Pre-norm transformer encoder block."""

    def __init__(self, d: int, heads: int, mlp: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.scale = 1.0 / math.sqrt(d // heads)
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):  # (B, S, d)
        b, s, d = x.shape
        q, k, v = self.qkv(self.n1(x)).reshape(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.mlp(self.n2(x)))


class FrameViT(Recipe, nn.Module):
    input_names = ("logmel",)
    targets = ("section",)
    default_loss = "arcface"

    def __init__(self, cfg: FrameViTConfig):
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError("hidden must be a multiple of heads")
        self.cfg = cfg
        self.norm_in = nn.LayerNorm(cfg.n_mels)
        self.embed = nn.Linear(cfg.n_mels, cfg.hidden)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        self.pos = nn.Parameter(torch.zeros(1, cfg.context + 1, cfg.hidden))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.Sequential(*[Block(cfg.hidden, cfg.heads, cfg.mlp, cfg.dropout) for _ in range(cfg.layers)])
        self.norm_out = nn.LayerNorm(cfg.hidden)
        starts = torch.arange(cfg.n_context) * cfg.shift
        self.register_buffer(
            "index", (starts[:, None] + torch.arange(cfg.context)[None, :]).reshape(-1), persistent=False
        )

    @property
    def embedding_dim(self) -> int:
        return self.cfg.hidden

    @property
    def embeddings_per_window(self) -> int:
        return self.cfg.n_context

    def raw_embedding(self, logmel):
        """(B, T, M) -> (B * N, hidden): one CLS embedding per context window."""
        c = self.cfg
        b = logmel.shape[0]
        ctx = logmel.index_select(1, self.index).reshape(b * c.n_context, c.context, c.n_mels)
        x = self.embed(self.norm_in(ctx))
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.norm_out(self.blocks(x)[:, 0])

    def forward(self, logmel):  # (B, T, M) -> (B, N, hidden), each L2-normalised
        e = F.normalize(self.raw_embedding(logmel), dim=1)
        return e.reshape(logmel.shape[0], self.cfg.n_context, self.cfg.hidden)
