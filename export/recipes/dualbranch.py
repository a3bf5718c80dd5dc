"""Recipe ``dualbranch``: the two-branch embedding network of the DCASE 2024 report "First-shot
unsupervised anomalous sound detection based on self-supervised learning", after Wilkinghoff's
design.

- Branch 1: 1-D convolutions over the whole-window magnitude spectrum, then dense layers.
- Branch 2: a ResNet with CBAM (channel + spatial attention) blocks over the STFT magnitude
  spectrogram with its temporal mean removed per frequency bin.
- The two 128-d outputs are concatenated into one embedding (2 x 128). Training heads (joint class
  and machine type) sit on top of it and are not exported.

The front end (spectrum, STFT) runs in numpy in ``edge_agent.model.frontend`` both here and at run time;
the network receives its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.model.frontend import FeatureSpec, Frontend
from export.recipes.base import Recipe, WindowedConfig


@dataclass
class DualBranchConfig(WindowedConfig):
    sample_rate: int = 16000
    window_seconds: float = 10.0
    n_fft: int = 1024
    hop: int = 512
    branch_dim: int = 128
    spec_channels: int = 64
    # (kernel, stride) of the 1-D convolutions over the spectrum
    spec_convs: list = field(default_factory=lambda: [[256, 64], [64, 32], [16, 4]])
    res_channels: list = field(default_factory=lambda: [16, 32, 64, 128])
    stem_channels: int = 16
    cbam: bool = True
    stft_compress: str = "none"  # "log" compresses the STFT magnitude before the temporal mean is removed
    # 0: the spectrum branch sees |FFT| of the whole window; N: the mean |FFT| of its N-sample
    # pieces, which a stream computes once per piece (the fast model uses 1 s pieces)
    spectrum_segment: int = 0
    # "stft": the magnitude spectrogram (n_fft // 2 + 1 bins); "logmel": n_mels log-mel bands, a
    # quarter of the bins at the default sizes, so the spectrogram branch costs about a quarter
    spectrogram: str = "stft"
    n_mels: int = 128
    # width of the spectrum branch's hidden dense layers; 0: branch_dim. Its two square layers
    # are most of the network's weights, read once per window at batch 1
    spec_hidden: int = 0

    def __post_init__(self):
        if self.spectrogram not in ("stft", "logmel"):
            raise ValueError(f"spectrogram must be 'stft' or 'logmel', not {self.spectrogram!r}")
        if self.spec_hidden < 0:
            raise ValueError(f"spec_hidden must be 0 (branch_dim) or a width, not {self.spec_hidden}")

    def frontend(self) -> Frontend:
        return Frontend(
            self.sample_rate,
            self.window_samples,
            (
                FeatureSpec("spectrum", "spectrum", segment=self.spectrum_segment),
                FeatureSpec(
                    "spectrogram",
                    self.spectrogram,
                    n_fft=self.n_fft,
                    hop=self.hop,
                    n_mels=self.n_mels,
                    compress=self.stft_compress,
                    mean_removed=True,
                ),
            ),
        )


class ChannelAttention(nn.Module):
    def __init__(self, c: int, reduction: int = 8):
        super().__init__()
        h = max(4, c // reduction)
        self.mlp = nn.Sequential(nn.Linear(c, h), nn.ReLU(inplace=True), nn.Linear(h, c))

    def forward(self, x):
        a = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(a)[:, :, None, None]


class SpatialAttention(nn.Module):
    def __init__(self, k: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)

    def forward(self, x):
        a = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(a))


class CBAMResBlock(nn.Module):
    """Pre-activation residual block followed by CBAM (Woo et al. 2018) on the residual path."""

    def __init__(self, cin: int, cout: int, stride: int, cbam: bool = True):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.att = nn.Sequential(ChannelAttention(cout), SpatialAttention()) if cbam else nn.Identity()
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.MaxPool2d(stride, ceil_mode=True) if stride > 1 else nn.Identity(),
                nn.Conv2d(cin, cout, 1, bias=False),
            )

    def forward(self, x):
        h = F.relu(self.bn1(x))
        r = self.conv1(h)
        r = self.conv2(F.relu(self.bn2(r)))
        r = self.att(r)
        return r + (x if self.short is None else self.short(x))


class SpectrumBranch(nn.Module):
    def __init__(self, n_bins: int, cfg: DualBranchConfig):
        super().__init__()
        self.bn = nn.BatchNorm1d(1)
        layers, cin, length = [], 1, n_bins
        for k, s in cfg.spec_convs:
            k = min(k, length)
            layers += [nn.Conv1d(cin, cfg.spec_channels, k, stride=s), nn.ReLU(inplace=True)]
            cin, length = cfg.spec_channels, (length - k) // s + 1
        self.convs = nn.Sequential(*layers)
        d = cfg.branch_dim
        h = cfg.spec_hidden or d
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * length, h),
            nn.BatchNorm1d(h),
            nn.ReLU(inplace=True),
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.ReLU(inplace=True),
            nn.Linear(h, d),
        )

    def forward(self, spectrum):  # (B, n_bins)
        x = self.bn(torch.log1p(spectrum)[:, None, :])
        return self.dense(self.convs(x))


class SpectrogramBranch(nn.Module):
    def __init__(self, cfg: DualBranchConfig):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.stem = nn.Sequential(
            nn.Conv2d(1, cfg.stem_channels, 7, stride=2, padding=3, bias=False), nn.MaxPool2d(3, stride=2, padding=1)
        )
        blocks, cin = [], cfg.stem_channels
        for i, c in enumerate(cfg.res_channels):
            blocks.append(CBAMResBlock(cin, c, 1 if i == 0 else 2, cfg.cbam))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.out_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, cfg.branch_dim)

    def forward(self, spec):  # (B, T, F), temporal mean already removed by the front end
        x = self.bn(spec[:, None])
        x = F.relu(self.out_bn(self.blocks(self.stem(x))))
        # max over time (transient events), mean over frequency
        return self.fc(x.amax(dim=2).mean(dim=2))


class DualBranchNet(Recipe, nn.Module):
    """Inputs are the front end's features; output is the L2-normalised 2 x 128 embedding."""

    input_names = ("spectrum", "spectrogram")
    targets = ("joint", "machine")  # L = L_joint + L_machine
    default_loss = "subcluster-adacos"

    def __init__(self, cfg: DualBranchConfig):
        super().__init__()
        self.cfg = cfg
        self.spectrum = SpectrumBranch((cfg.spectrum_segment or cfg.window_samples) // 2, cfg)
        self.spectrogram = SpectrogramBranch(cfg)

    @property
    def embedding_dim(self) -> int:
        return 2 * self.cfg.branch_dim

    def raw_embedding(self, spectrum, spectrogram):
        return torch.cat([self.spectrum(spectrum), self.spectrogram(spectrogram)], dim=1)

    def forward(self, spectrum, spectrogram):
        return F.normalize(self.raw_embedding(spectrum, spectrogram), dim=1)
