"""``indicators``: level, crest factor and kurtosis of the window's sound (``edge_agent.model.indicators``),
standardised, distance to the nearest enrolment window; no model output needed, any machine."""

from __future__ import annotations

import numpy as np

from edge_agent.model.indicators import held_out_scores, indicator_scores, indicator_spec, reference
from edge_agent.scoring.heads.base import Enrolment, Head, ScoreError


class Indicators(Head):
    kind = "indicators"
    outputs = ("indicators",)
    model_free = True
    learnable = True
    summary = "level, crest factor and kurtosis (distance to the nearest enrolment window)"

    def __init__(self, spec: dict):
        super().__init__(spec)
        # the stored reference rows, parsed once (parsing costs more than scoring a window)
        self._ref = reference(spec) if "rows" in spec else None

    def score(self, outputs, bank=None) -> np.ndarray:
        if self._ref is None:
            raise ScoreError("the indicators head has no enrolment reference; recalibrate")
        return indicator_scores(self.spec, self._output(outputs, "indicators"), self._ref)

    def fit(self, enrolment: Enrolment) -> tuple[dict, np.ndarray]:
        rows = self._output(enrolment.outputs, "indicators")
        try:
            spec = indicator_spec(rows)
        except ValueError as e:
            raise ScoreError(str(e)) from None
        return spec, held_out_scores(spec, rows, enrolment.groups)
