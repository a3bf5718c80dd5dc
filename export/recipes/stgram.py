"""Recipes ``stgram`` and ``sepstgram``: spectral-temporal fusion (Liu et al., "Anomalous Sound
Detection Using Spectral-Temporal Information Fusion"; SepSTgramNet from "Unsupervised Detection of
Anomalous Sounds for Machine Condition Monitoring").

- Tgram branch: a 1-D convolution on the waveform (kernel n_fft, stride hop: one output frame per
  STFT frame), then three blocks of LayerNorm (over time), LeakyReLU and 1-D convolution; a map of
  the log-mel spectrogram's size (frames x 128).
- ``stgram``: Tgram map and log-mel stacked as two channels into one ResNet18.
- ``sepstgram``: each map through its own ResNet18, outputs concatenated, two fully connected layers.
- Trained as a classifier of machine section (cross-entropy; ArcFace as an option); the embedding
  (before the classifier) is what the runtime's k-NN uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.model.frontend import FeatureSpec, Frontend
from export.recipes.base import Recipe, WindowedConfig


@dataclass
class STgramConfig(WindowedConfig):
    variant: str = "stgram"  # or "sepstgram"
    sample_rate: int = 16000
    window_seconds: float = 2.0
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 128
    resnet_widths: list = field(default_factory=lambda: [64, 128, 256, 512])
    embedding_dim: int = 128

    def __post_init__(self):
        if self.variant not in ("stgram", "sepstgram"):
            raise ValueError(f"variant must be stgram or sepstgram, got {self.variant!r}")

    def frontend(self) -> Frontend:
        return Frontend(
            self.sample_rate,
            self.window_samples,
            (
                FeatureSpec("waveform", "waveform"),
                FeatureSpec("logmel", "logmel", n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels),
            ),
        )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """ResNet18 (He et al. 2016): stem, four stages of two basic blocks, global average pooling."""

    def __init__(self, in_channels: int, widths=(64, 128, 256, 512)):
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], w0
        for i, w in enumerate(widths):
            layers += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x):
        return self.layers(self.stem(x)).mean(dim=(2, 3))


class Tgram(nn.Module):
    def __init__(self, cfg: STgramConfig):
        super().__init__()
        c, t = cfg.n_mels, cfg.frames
        self.conv = nn.Conv1d(1, c, cfg.n_fft, cfg.hop, bias=False)
        self.blocks = nn.Sequential(
            *[nn.Sequential(nn.LayerNorm(t), nn.LeakyReLU(0.2), nn.Conv1d(c, c, 3, 1, 1, bias=False)) for _ in range(3)]
        )

    def forward(self, wav):  # (B, N) -> (B, frames, n_mels), laid out like the log-mel map
        return self.blocks(self.conv(wav[:, None, :])).transpose(1, 2)


class STgramNet(Recipe, nn.Module):
    input_names = ("waveform", "logmel")
    targets = ("section",)
    default_loss = "softmax"

    def __init__(self, cfg: STgramConfig):
        super().__init__()
        self.cfg = cfg
        self.tgram = Tgram(cfg)
        self.mel_bn = nn.BatchNorm2d(1)
        d = cfg.embedding_dim
        if cfg.variant == "stgram":
            self.backbone = ResNet18(2, cfg.resnet_widths)
            self.head = nn.Linear(self.backbone.out_dim, d)
        else:
            self.backbone_t = ResNet18(1, cfg.resnet_widths)
            self.backbone_s = ResNet18(1, cfg.resnet_widths)
            w = 2 * self.backbone_t.out_dim
            self.head = nn.Sequential(
                nn.Linear(w, w // 2), nn.BatchNorm1d(w // 2), nn.ReLU(inplace=True), nn.Linear(w // 2, d)
            )

    @property
    def embedding_dim(self) -> int:
        return self.cfg.embedding_dim

    def raw_embedding(self, waveform, logmel):
        t = self.tgram(waveform)[:, None]  # (B, 1, T, M)
        s = self.mel_bn(logmel[:, None])
        if self.cfg.variant == "stgram":
            return self.head(self.backbone(torch.cat([t, s], dim=1)))
        return self.head(torch.cat([self.backbone_t(t), self.backbone_s(s)], dim=1))

    def forward(self, waveform, logmel):
        return F.normalize(self.raw_embedding(waveform, logmel), dim=1)
