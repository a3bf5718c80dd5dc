"""``knn``: cosine distance to the nearest bank entries (the default; works for any machine)."""

from __future__ import annotations

import numpy as np

from edge_agent.scoring.heads.base import Enrolment, Head, ScoreError


class KNN(Head):
    kind = "knn"
    outputs = ("embedding",)
    learnable = True
    summary = "k-NN cosine distance"

    def score(self, outputs, bank=None) -> np.ndarray:
        if bank is None:
            raise ScoreError("the k-NN head scores against a bank")
        return bank.score(self._output(outputs, "embedding"))

    def fit(self, enrolment: Enrolment) -> tuple[dict, np.ndarray]:
        # its enrolment scores are the leave-one-clip-out distances, which line up with this
        # enrolment's windows only when the bank holds nothing else
        if enrolment.knn_scores is None:
            raise ScoreError("an ensemble with knn is fitted on a new bank only, with one embedding per window")
        return self.spec, np.asarray(enrolment.knn_scores)

    def describe(self, k: int = 1) -> str:
        return f"k-NN cosine distance (k={k})"
