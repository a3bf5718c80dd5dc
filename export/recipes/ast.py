"""The Audio Spectrogram Transformer with the Hugging Face module names (``ASTModel``), so its
checkpoints load with prefixes stripped; the spectrogram branch of ``w2vast``. ``c`` is a
``w2vast.W2VASTConfig`` (its ``ast_*`` sizes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention(x, q_proj, k_proj, v_proj, out_proj, heads: int, dropout: float, training: bool):
    """Multi-head self-attention written out (exports to plain ONNX operators)."""
    b, s, d = x.shape
    hd = d // heads
    q = q_proj(x).reshape(b, s, heads, hd).transpose(1, 2) * hd**-0.5
    k = k_proj(x).reshape(b, s, heads, hd).transpose(1, 2)
    v = v_proj(x).reshape(b, s, heads, hd).transpose(1, 2)
    att = F.dropout(torch.softmax(q @ k.transpose(-2, -1), dim=-1), dropout, training)
    return out_proj((att @ v).transpose(1, 2).reshape(b, s, d))


class PatchEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.projection = nn.Conv2d(1, c.ast_hidden, c.ast_patch, (c.ast_fstride, c.ast_tstride))

    def forward(self, fbank):  # (B, T, F) -> (B, patches, H), frequency-major as AST
        return self.projection(fbank[:, None].transpose(2, 3)).flatten(2).transpose(1, 2)


class ASTEmbeddings(nn.Module):
    def __init__(self, c):
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

    def __init__(self, c):
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
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([ASTLayer(c) for _ in range(c.ast_layers)])


class AST(nn.Module):
    """Audio Spectrogram Transformer (Gong et al. 2021): Kaldi fbank (B, T, F) -> CLS token (B, H)."""

    def __init__(self, c):
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
