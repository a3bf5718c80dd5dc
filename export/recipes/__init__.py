"""Training recipes, selectable by name with ``edge-agent train --recipe NAME``.

Every recipe's model takes the front end's features (``input_names``), returns L2-normalised
embeddings, and declares what it is trained on (``targets``: joint class, machine type, section)
and its default loss (``default_loss``).
"""
from __future__ import annotations

RECIPES = ("dualbranch", "stgram", "sepstgram", "framevit", "clvae", "w2v-ast")


def build_model(recipe: str, config: dict):
    """(model, config object) for a recipe name and its config dict (from a checkpoint or defaults)."""
    if recipe == "dualbranch":
        from .dualbranch import DualBranchConfig, DualBranchNet

        cfg = DualBranchConfig(**config)
        return DualBranchNet(cfg), cfg
    if recipe in ("stgram", "sepstgram"):
        from .stgram import STgramConfig, STgramNet

        cfg = STgramConfig(**{**config, "variant": recipe})
        return STgramNet(cfg), cfg
    if recipe == "framevit":
        from .framevit import FrameViT, FrameViTConfig

        cfg = FrameViTConfig(**config)
        return FrameViT(cfg), cfg
    if recipe == "clvae":
        from .clvae import CLVAEConfig, CLVAENet

        cfg = CLVAEConfig(**config)
        return CLVAENet(cfg), cfg
    if recipe == "w2v-ast":
        from .w2vast import W2VASTConfig, W2VASTNet

        cfg = W2VASTConfig(**config)
        return W2VASTNet(cfg), cfg
    raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}")
