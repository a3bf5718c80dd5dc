"""``classifier``: 1 - softmax(logits)[class], the STgram papers' score (STgram recipes; machines the
model was trained on)."""

from __future__ import annotations

import numpy as np

from edge_agent.scoring.heads.base import Head


def softmax_score(logits: np.ndarray, class_index: int) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return (1.0 - p[:, class_index]).astype(np.float32)


class Classifier(Head):
    kind = "classifier"
    outputs = ("logits",)
    needs_class = True
    summary = "classifier 1 - softmax[class]"

    def score(self, outputs, bank=None) -> np.ndarray:
        return softmax_score(self._output(outputs, "logits"), self.spec["class_index"])

    def describe(self, k: int = 1) -> str:
        return f"classifier 1 - softmax[{self.spec.get('class')}]"
