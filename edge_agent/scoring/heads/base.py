"""What every score head is: the model outputs it needs, how it is fitted at enrolment, how it
scores a window, how it describes itself, whether a learning period can make it, and how it is
stored (its spec: a small JSON-able dict in the bank's metadata). A head object is made once from
its stored spec, when the bank is loaded, and then scores every window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from edge_agent.errors import UserError


class ScoreError(UserError):
    pass


@dataclass
class Enrolment:
    """What a head may be fitted on: the enrolled windows' model outputs (in enrolment order), each
    window's clip, and the k-NN's leave-one-clip-out scores when they line up with those windows."""

    outputs: dict[str, np.ndarray]
    groups: np.ndarray
    knn_scores: Optional[np.ndarray] = None  # None: the bank holds more than this enrolment


class Head:
    kind: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]] = ()  # the model outputs it reads ("indicators" every bundle has)
    needs_class: ClassVar[bool] = False  # the machine must be one of the model's classes
    model_free: ClassVar[bool] = False  # computed from the window's samples: any bundle can use it
    learnable: ClassVar[bool] = False  # a learning period keeps what it needs per window
    summary: ClassVar[str] = ""  # one line for --help and docs

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    def score(self, outputs: dict[str, np.ndarray], bank=None) -> np.ndarray:
        """Anomaly score per window (higher: less like the enrolment)."""
        raise NotImplementedError

    def fit(self, enrolment: Enrolment) -> tuple[dict, np.ndarray]:
        """At enrolment: (the spec to store, each enrolled window's score as the threshold fit needs
        it). Heads that need nothing from the enrolment score the windows as they are."""
        return self.spec, self.score(enrolment.outputs)

    def describe(self, k: int = 1) -> str:
        return self.summary

    def _output(self, outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
        try:
            return outputs[name]
        except KeyError:
            raise ScoreError(
                f"the bank scores with {self.kind!r}, but the model has no {name!r} output; recalibrate with "
                "this model's heads"
            ) from None
