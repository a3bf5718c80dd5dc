"""The recipe contract. ``Recipe`` is what every recipe model declares, with its defaults (the torch
module mixes it in: ``class DualBranchNet(Recipe, nn.Module)``); ``WindowedConfig`` is what every
recipe config shares (dataclasses with sample_rate, window_seconds, n_fft, hop). Training and export
read these attributes and never probe a model for what it has."""

from __future__ import annotations

from dataclasses import asdict

from edge_agent.audio.windows import n_frames


class WindowedConfig:
    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """STFT frames in one window (no padding, as the front end computes them)."""
        return n_frames(self.window_samples, self.n_fft, self.hop)

    def to_dict(self) -> dict:
        return asdict(self)


class Recipe:
    """Defaults of the recipe contract; a recipe overrides what differs."""

    input_names: tuple[str, ...] = ()  # front-end features the model takes, in order
    output_names: tuple[str, ...] = ("embedding",)  # ONNX outputs; more than one: score-head outputs
    targets: tuple[str, ...] = ("joint",)  # labels trained on: joint class, machine type, section
    default_loss: str = "arcface"
    default_head: str = "knn"  # the bundle's default score head
    embeddings_per_window: int = 1
    pretrained_slots: tuple[str, ...] = ()  # names accepted by --pretrained NAME=PATH
    speed_perturb: tuple[float, ...] = ()  # default speed factors for training
    own_training: bool = False  # True: ``fit`` replaces the shared minibatch loop

    def heads(self, ck: dict) -> dict:
        """Score heads the bundle declares besides k-NN (from the checkpoint ``ck``)."""
        return {}

    def target_embeddings(self, *inputs) -> dict:
        """The embedding each target's loss is computed on; one shared embedding by default."""
        e = self.raw_embedding(*inputs)
        return {t: e for t in self.targets}

    def load_pretrained(self, name: str, path: str) -> dict:
        raise ValueError(f"this recipe takes no pre-trained weights ({name}={path})")

    def fit(self, ts, frontend, args, rng, pretrained: dict, progress: bool = True, epoch_features=None) -> dict:
        raise NotImplementedError("only recipes with own_training = True have their own fit")
