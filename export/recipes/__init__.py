"""Training recipes, selectable by name with ``edge-agent train --recipe NAME``.

Every recipe's model implements ``base.Recipe``: it takes the front end's features
(``input_names``), returns L2-normalised embeddings, and declares what it is trained on
(``targets``) and its default loss. ``REGISTRY`` is the one list of recipes; the CLI takes its
choices from it. Importing this package does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module


@dataclass(frozen=True)
class RecipeEntry:
    module: str  # under export.recipes
    model: str  # the model class (a base.Recipe and a torch module)
    config: str  # its config dataclass
    fixed: dict = field(default_factory=dict)  # config values the name implies


REGISTRY: dict[str, RecipeEntry] = {
    "dualbranch": RecipeEntry("dualbranch", "DualBranchNet", "DualBranchConfig"),
    "stgram": RecipeEntry("stgram", "STgramNet", "STgramConfig", {"variant": "stgram"}),
    "sepstgram": RecipeEntry("stgram", "STgramNet", "STgramConfig", {"variant": "sepstgram"}),
    "framevit": RecipeEntry("framevit", "FrameViT", "FrameViTConfig"),
    "clvae": RecipeEntry("clvae", "CLVAENet", "CLVAEConfig"),
    "w2v-ast": RecipeEntry("w2vast", "W2VASTNet", "W2VASTConfig"),
}
RECIPES = tuple(REGISTRY)


def _entry(recipe: str):
    """(registry entry, its imported module) of a recipe name."""
    if recipe not in REGISTRY:
        raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}")
    e = REGISTRY[recipe]
    return e, import_module(f"{__name__}.{e.module}")


def build_config(recipe: str, config: dict):
    """The config object of a recipe from its config dict (from a checkpoint or defaults); an
    unknown key raises TypeError, a refused value ValueError, before any model is built."""
    e, mod = _entry(recipe)
    return getattr(mod, e.config)(**{**config, **e.fixed})


def build_model(recipe: str, config: dict):
    """(model, config object) for a recipe name and its config dict (from a checkpoint or defaults)."""
    cfg = build_config(recipe, config)
    e, mod = _entry(recipe)
    return getattr(mod, e.model)(cfg), cfg
