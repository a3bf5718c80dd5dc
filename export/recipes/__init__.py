"""Training recipes, selectable by name with ``edge-agent train --recipe NAME``."""
from __future__ import annotations

RECIPES = ("dualbranch",)


def build_model(recipe: str, config: dict):
    """(model, config object) for a recipe name and its config dict (from a checkpoint or defaults)."""
    if recipe == "dualbranch":
        from .dualbranch import DualBranchConfig, DualBranchNet

        cfg = DualBranchConfig(**config)
        return DualBranchNet(cfg), cfg
    raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}")
