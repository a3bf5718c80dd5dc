"""``rec-kld``: a VAE's reconstruction loss plus its KL divergence (the clvae recipe's ``rec_kld``
output), for any machine; ``rec-kld-center`` adds lambda x the center-loss distance of the latent
mean to its section's center (``center_dist``; machines the model was trained on)."""

from __future__ import annotations

import numpy as np

from edge_agent.scoring.heads.base import Head


class RecKLD(Head):
    kind = "rec-kld"
    outputs = ("rec_kld",)
    summary = "VAE reconstruction + KL divergence"

    def score(self, outputs, bank=None) -> np.ndarray:
        return self._output(outputs, "rec_kld").reshape(-1).astype(np.float32)


class RecKLDCenter(Head):
    kind = "rec-kld-center"
    outputs = ("rec_kld", "center_dist")
    needs_class = True
    summary = "VAE reconstruction + KL + lambda x center distance"

    def score(self, outputs, bank=None) -> np.ndarray:
        rec = self._output(outputs, "rec_kld").reshape(-1)
        center = self._output(outputs, "center_dist")[:, self.spec["class_index"]]
        return (rec + self.spec["weight"] * center).astype(np.float32)

    def describe(self, k: int = 1) -> str:
        return f"VAE reconstruction + KL + {self.spec['weight']:g} x center distance [{self.spec.get('class')}]"
