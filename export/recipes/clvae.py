"""Recipe ``clvae``: intermediate representations of a trained CNN scored by a center-loss VAE
("Unsupervised anomalous sound detection using intermediate representation of trained models and
metric learning based variational autoencoder").

- Features: a PANNs-style ResNet38 at 32 kHz (audio resampled from 16 kHz by the front end); log-mel
  with window 1024, hop 320, 64 bands, 50 Hz - 14 kHz, in dB, frames centred (PANNs' extractor).
  The output of every residual block is averaged over time and frequency and the averages are
  concatenated: d = 3 x 64 + 4 x 128 + 6 x 256 + 3 x 512 = 3776 for ResNet38.
- The CNN is the published AudioSet-trained PANNs when ``--pretrained panns=ResNet38_mAP=0.434.pth``
  is given (frozen). Without it, stage 1 trains the same network here as a section classifier on
  the training clips, then freezes it: the intermediate representation of a model trained on
  this data.
- Center-loss VAE on the features (divided by their per-dimension spread, which keeps them
  non-negative): encoder FC blocks 1024 x 3 then 512 (Linear, BatchNorm, ReLU), latent 512 (mean
  and log-variance, reparameterised), decoder mirrored to d with a ReLU output. Loss
  L_rec + L_kld + lambda L_C (lambda 150), where L_C is the center loss of the latent mean to its
  section's center and the centers move with rate alpha = 1 (Wen et al.). L_rec and L_kld are means
  per dimension, L_C = mean over latent dimensions of (mu - c)^2 / 2.
- Outputs of the bundle: ``embedding`` (the latent mean, L2-normalised, for the k-NN), ``rec_kld``
  (L_rec + L_kld of the window, decoding the mean) and ``center_dist`` (L_C to every section
  center). Score heads: ``rec-kld``, ``rec-kld-center`` (= rec-kld + lambda L_C[class]) and their
  ensemble, the bundle's declared default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edge_agent.model.frontend import FeatureSpec, Frontend
from export.recipes.base import Recipe, WindowedConfig

log = logging.getLogger("edge_agent.train")


@dataclass
class CLVAEConfig(WindowedConfig):
    sample_rate: int = 32000
    window_seconds: float = 2.0
    n_fft: int = 1024
    hop: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    stem: int = 64  # conv_block1 channels
    blocks: list = field(default_factory=lambda: [3, 4, 6, 3])  # ResNet38
    widths: list = field(default_factory=lambda: [64, 128, 256, 512])
    encoder: list = field(default_factory=lambda: [1024, 1024, 1024, 512])
    latent: int = 512
    center_weight: float = 150.0  # lambda
    center_rate: float = 1.0  # alpha
    backbone_epochs: int = 10  # stage 1 (no pre-trained CNN given); 0 keeps the CNN as it is
    vae_epochs: int = 100
    vae_lr: float = 1e-3
    feature_crops: int = 4  # windows per clip whose features the VAE trains on
    n_classes: int = 0  # section classes (set by training; sizes the center buffer)

    def frontend(self) -> Frontend:
        return Frontend(
            self.sample_rate,
            self.window_samples,
            (
                FeatureSpec(
                    "logmel",
                    "logmel",
                    n_fft=self.n_fft,
                    hop=self.hop,
                    n_mels=self.n_mels,
                    fmin=self.fmin,
                    fmax=self.fmax,
                    centre=True,
                    db=True,
                ),
            ),
        )

    @property
    def feature_dim(self) -> int:
        return sum(n * w for n, w in zip(self.blocks, self.widths))


# -- PANNs ResNet38 (module names as in the PANNs repository, so its checkpoints load) -------------
class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.avg_pool2d(F.relu(self.bn2(self.conv2(x))), 2)


class BasicBlock(nn.Module):
    """PANNs' residual block: a stride-2 block average-pools first (and in its shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride == 2:
            self.downsample = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        elif cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.avg_pool2d(x, 2) if self.stride == 2 else x
        y = F.dropout(F.relu(self.bn1(self.conv1(y))), p=0.1, training=self.training)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetLayers(nn.Module):
    def __init__(self, cin: int, blocks, widths):
        super().__init__()
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layer = []
            for j in range(n):
                layer.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.n_layers = len(blocks)

    def layers(self):
        return [getattr(self, f"layer{i + 1}") for i in range(self.n_layers)]


class PANNsFeatures(nn.Module):
    """log-mel (B, T, M) -> every residual block's output averaged over time and frequency (B, d)."""

    def __init__(self, cfg: CLVAEConfig):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cfg.n_mels)
        self.conv_block1 = ConvBlock(1, cfg.stem)
        self.resnet = ResNetLayers(cfg.stem, cfg.blocks, cfg.widths)

    def trunk(self, logmel):
        x = self.bn0(logmel[:, None].transpose(1, 3)).transpose(1, 3)  # batch norm per mel band, as PANNs
        return F.dropout(self.conv_block1(x), p=0.2, training=self.training)

    def forward(self, logmel):
        x, feats = self.trunk(logmel), []
        for layer in self.resnet.layers():
            for block in layer:
                x = block(x)
                feats.append(x.mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)

    def pooled(self, logmel):
        """The last block's output, mean + max pooled (PANNs' clip pooling): stage-1 training."""
        x = self.trunk(logmel)
        for layer in self.resnet.layers():
            x = layer(x)
        x = x.mean(dim=3)
        return x.max(dim=2).values + x.mean(dim=2)


def load_panns(backbone: PANNsFeatures, path: str, cfg: CLVAEConfig) -> dict:
    """Weights of a PANNs checkpoint (e.g. ResNet38_mAP=0.434.pth) into the feature CNN."""
    from edge_agent.model.frontend import mel_filterbank
    from export.pretrained import load_matching, read_state_dict

    sd = read_state_dict(path)
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
    mel = sd.get("logmel_extractor.melW")
    if mel is not None:
        ours = torch.from_numpy(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax))
        if mel.shape != ours.shape or float((mel - ours).abs().max()) > 1e-3:
            log.warning(
                "the checkpoint's mel filters differ from this front end's (%s vs %s); check n_fft, n_mels, fmin, fmax",
                tuple(mel.shape),
                tuple(ours.shape),
            )
    return load_matching(
        backbone,
        sd,
        f"PANNs checkpoint {path}",
        hint="the default clvae config is ResNet38 (stem 64, blocks [3, 4, 6, 3], widths [64, 128, 256, 512], 64 mel "
        "bands)",
    )


# -- center-loss VAE --------------------------------------------------------------------------------
def _fc(cin: int, cout: int):
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class CenterLossVAE(nn.Module):
    def __init__(self, d: int, encoder, latent: int, n_classes: int):
        super().__init__()
        dims = [d] + list(encoder)
        self.encoder = nn.Sequential(*[_fc(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.mu = nn.Linear(dims[-1], latent)
        self.logvar = nn.Linear(dims[-1], latent)
        rev = [latent] + list(reversed(encoder))
        self.decoder = nn.Sequential(*[_fc(a, b) for a, b in zip(rev[:-1], rev[1:])], nn.Linear(rev[-1], d), nn.ReLU())
        self.register_buffer("centers", torch.zeros(n_classes, latent))

    def encode(self, x):
        h = self.encoder(x)
        return self.mu(h), self.logvar(h).clamp(-20.0, 20.0)

    @staticmethod
    def kld(mu, logvar):  # per window, mean over latent dimensions
        return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean(dim=1)

    def center_dist(self, mu):  # (B, C): mean over latent dimensions of (mu - c)^2 / 2
        return 0.5 * (
            mu.pow(2).mean(dim=1, keepdim=True)
            - 2 * mu @ self.centers.T / mu.shape[1]
            + self.centers.pow(2).mean(dim=1)[None, :]
        )

    @torch.no_grad()
    def update_centers(self, mu, y, rate: float):
        """Wen et al.'s center update: c_j -= rate * sum_i (c_j - x_i) / (1 + n_j) over the batch."""
        for j in y.unique():
            m = y == j
            delta = (self.centers[j] - mu[m]).sum(dim=0) / (1 + m.sum())
            self.centers[j] -= rate * delta


class CLVAENet(Recipe, nn.Module):
    input_names = ("logmel",)
    output_names = ("embedding", "rec_kld", "center_dist")
    targets = ("section",)
    default_loss = "softmax"
    pretrained_slots = ("panns",)
    default_head = "rec-kld+rec-kld-center"  # the published ensemble
    own_training = True  # CNN first, then the VAE on its features

    def __init__(self, cfg: CLVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = PANNsFeatures(cfg)
        d = cfg.feature_dim
        self.register_buffer("feature_scale", torch.ones(d))
        self.vae = CenterLossVAE(d, cfg.encoder, cfg.latent, max(1, cfg.n_classes))

    @property
    def embedding_dim(self) -> int:
        return self.cfg.latent

    def features(self, logmel):
        return self.backbone(logmel) / self.feature_scale

    def raw_embedding(self, logmel):
        return self.vae.encode(self.features(logmel))[0]

    def forward(self, logmel):
        x = self.features(logmel)
        mu, logvar = self.vae.encode(x)
        rec = (self.vae.decoder(mu) - x).pow(2).mean(dim=1)
        return F.normalize(mu, dim=1), rec + self.vae.kld(mu, logvar), self.vae.center_dist(mu)

    def heads(self, ck: dict) -> dict:
        classes = ck["section_classes"]
        return {
            "rec-kld": {"outputs": ["rec_kld"]},
            "rec-kld-center": {
                "outputs": ["rec_kld", "center_dist"],
                "weight": self.cfg.center_weight,
                "classes": classes,
            },
        }

    # -- training (two stages; called by export.train) ---------------------------------------------
    def fit(
        self, ts, frontend, args, rng: np.random.Generator, pretrained: dict, progress: bool = True, epoch_features=None
    ):
        cfg = self.cfg
        sections = ts.section_classes
        section_of_joint = {it.joint: sections.index(ts.section_of(it)) for it in ts.items}
        cfg.n_classes = len(sections)
        self.vae.centers = torch.zeros(len(sections), cfg.latent)
        history = {"backbone": [], "vae": []}
        if "panns" in pretrained:
            info = load_panns(self.backbone, pretrained["panns"], cfg)
            log.info(
                "loaded PANNs weights from %s (%d tensors; %d unused)",
                pretrained["panns"],
                info["loaded"],
                info["unused"],
            )
        elif cfg.backbone_epochs > 0:
            history["backbone"] = self._train_backbone(
                ts, frontend, args, rng, section_of_joint, len(sections), progress, epoch_features
            )
        self.backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        # the VAE trains on the frozen CNN's features of several random windows per clip
        xs, ys = [], []
        for _ in range(cfg.feature_crops):
            feats, joint, _ = epoch_features(ts, frontend, rng, args)
            with torch.no_grad():
                for i in range(0, len(joint), 32):
                    xs.append(self.backbone(torch.from_numpy(feats["logmel"][i : i + 32])))
            ys.append(np.array([section_of_joint[ts.joint_classes[j]] for j in joint]))
        x, y = torch.cat(xs), torch.from_numpy(np.concatenate(ys))
        self.feature_scale.copy_(x.std(dim=0).clamp_min(1e-6))
        x = x / self.feature_scale
        with torch.no_grad():  # start the decoder at the mean feature vector: training then learns the variation
            self.vae.decoder[-2].bias.copy_(x.mean(dim=0))
        opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.vae_lr)
        bar = tqdm(range(cfg.vae_epochs), desc="training VAE", unit="epoch", disable=not progress)
        for _ in bar:
            self.vae.train()
            order = torch.from_numpy(rng.permutation(len(y)))
            losses = []
            for b in range(0, len(order), args.batch_size):
                idx = order[b : b + args.batch_size]
                if len(idx) < 2:
                    continue
                xb, yb = x[idx], y[idx]
                mu, logvar = self.vae.encode(xb)
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
                rec = (self.vae.decoder(z) - xb).pow(2).mean()
                lc = self.vae.center_dist(mu).gather(1, yb[:, None]).mean()
                loss = rec + self.vae.kld(mu, logvar).mean() + cfg.center_weight * lc
                opt.zero_grad()
                loss.backward()
                opt.step()
                self.vae.update_centers(mu.detach(), yb, cfg.center_rate)
                losses.append([loss.item(), rec.item(), lc.item()])
            loss_m, rec_m, lc_m = np.mean(losses, axis=0)
            log.info("VAE epoch: loss %.4f (reconstruction %.4f, center %.4f)", loss_m, rec_m, lc_m)
            history["vae"].append(float(loss_m))
            bar.set_postfix(loss=f"{history['vae'][-1]:.4f}")
        self.eval()
        return history

    def _train_backbone(self, ts, frontend, args, rng, section_of_joint, n_classes, progress, epoch_features):
        head = nn.Linear(self.cfg.widths[-1], n_classes)
        opt = torch.optim.Adam(list(self.backbone.parameters()) + list(head.parameters()), lr=args.lr)
        hist = []
        bar = tqdm(range(self.cfg.backbone_epochs), desc="training CNN", unit="epoch", disable=not progress)
        for _ in bar:
            feats, joint, _ = epoch_features(ts, frontend, rng, args)
            y = np.array([section_of_joint[ts.joint_classes[j]] for j in joint])
            order = rng.permutation(len(y))
            self.backbone.train()
            losses = []
            for b in range(0, len(order), args.batch_size):
                idx = order[b : b + args.batch_size]
                if len(idx) < 2:
                    continue
                logits = head(self.backbone.pooled(torch.from_numpy(feats["logmel"][idx])))
                loss = F.cross_entropy(logits, torch.from_numpy(y[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            hist.append(float(np.mean(losses)))
            bar.set_postfix(loss=f"{hist[-1]:.3f}")
        return hist
