"""The bundle manifest as a typed contract: written by ``export``, read by bundles, engines and scoring.

One pydantic model validates ``manifest.json`` when a bundle loads (unknown keys and wrong types are
refused with the key's name, as the config is), so no reader looks up raw keys or guesses defaults.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.model.frontend import Frontend
from edge_agent.scoring.heads import HEADS, ScoreError, parse_score

MANIFEST_SCHEMA = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tensor(_Strict):
    """A model input or output: its name and shape (-1 for the dynamic batch axis)."""

    name: str
    shape: list[int]
    dtype: Literal["float32"] = "float32"


class Head(_Strict):
    """A score head besides the k-NN (``edge_agent.scoring.heads``): which outputs feed it, and for the
    class-conditioned heads the classes the model knows."""

    output: Optional[str] = None
    outputs: list[str] = Field(default_factory=list)
    classes: list[str] = Field(default_factory=list)
    weight: Optional[float] = None


class Score(_Strict):
    """How embeddings become a window's score: cosine k-NN per embedding, averaged over the window's
    embeddings; ``head`` is the score ``calibrate`` uses unless told otherwise."""

    kind: Literal["knn"] = "knn"
    distance: Literal["cosine"] = "cosine"
    aggregate: Literal["mean"] = "mean"
    embeddings_per_window: int = Field(1, ge=1)
    head: str = "knn"

    @field_validator("head")
    @classmethod
    def _known_head(cls, v: str) -> str:
        try:
            parse_score(v)
        except ScoreError as e:
            raise ValueError(str(e).replace("--score ", "")) from None
        return v


class Manifest(_Strict):
    # "schema" would shadow a BaseModel attribute, hence the alias
    schema_version: int = Field(MANIFEST_SCHEMA, alias="schema")
    name: str
    version: str
    recipe: str
    recipe_config: dict[str, Any] = Field(default_factory=dict)
    created: Optional[str] = None
    model_file: str = "model.onnx"
    opset: int
    sample_rate: int = Field(gt=0)
    window_seconds: float = Field(gt=0)
    frontend: Frontend
    inputs: list[Tensor] = Field(min_length=1)
    outputs: list[Tensor] = Field(min_length=1)
    # bundles exported before "heads" existed name their classifier here; newer ones name it in both
    classifier: Optional[Head] = None
    heads: dict[str, Head] = Field(default_factory=dict)
    embedding_dim: int = Field(gt=0)
    score: Score = Field(default_factory=Score)
    training: dict[str, Any] = Field(default_factory=dict)
    parity_max_abs_diff: Optional[float] = None
    # set by ``edge-agent quantize``: how the weights and activations were quantised, on what windows
    quantization: Optional[dict[str, Any]] = None
    # set by ``calibrate --adapt``: the model this one was fine-tuned from (name, version, sha256), the
    # machine and audio it learnt, and the label-free check that kept it (export/adapt.py)
    adapted: Optional[dict[str, Any]] = None
    files: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) else v

    @field_validator("heads")
    @classmethod
    def _known_heads(cls, v: dict[str, Head]) -> dict[str, Head]:
        bad = sorted(set(v) - set(HEADS))
        if bad:
            raise ValueError(f"unknown score head(s) {', '.join(bad)}; known: {', '.join(HEADS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.frontend.sample_rate != self.sample_rate:
            raise ValueError(
                f"front-end rate {self.frontend.sample_rate} Hz differs from sample_rate {self.sample_rate}"
            )
        features = {f.name for f in self.frontend.features}
        missing = [t.name for t in self.inputs if t.name not in features]
        if missing:
            raise ValueError(f"inputs {missing} have no front-end feature (features: {sorted(features)})")
        if self.files and self.model_file not in self.files:
            raise ValueError(f"model_file {self.model_file!r} is not among the files {sorted(self.files)}")
        return self

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def all_heads(self) -> dict[str, Head]:
        """The score heads this bundle carries: {name: spec}; every bundle has ``knn``."""
        heads = {"knn": Head(), **self.heads}
        if self.classifier is not None and "classifier" not in heads:
            heads["classifier"] = self.classifier
        return heads

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_manifest(data: Any) -> Manifest:
    """Validate a manifest; raises ``ValueError`` whose text names each bad key and why."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(problems) from None
