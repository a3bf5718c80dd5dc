"""What a learning period (``calibration.learning``) gives the runtime, which never imports it: a
``Learner`` per machine, made by the factory the CLI passes in (``runtime.agent.LearnerFactory``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol

import numpy as np

if TYPE_CHECKING:
    from edge_agent.scoring.bank import MemoryBank


class Learner(Protocol):
    def add(
        self, embedding: np.ndarray, level_dbfs: float, indicators: np.ndarray, samples: Optional[np.ndarray] = None
    ) -> Optional["MemoryBank"]:
        """One window of normal sound (``samples``: its audio at the model's rate, for the band
        profile an alarm is explained against); the new bank when the period is over, else None."""

    def progress(self) -> float:
        """Share of the period done, 0 to 1."""

    def describe(self) -> str: ...

    def save(self) -> None:
        """Keep what was learnt so far: the next start resumes the period."""


class FeedbackEnroller(Protocol):
    """ "That was normal" (``calibration.feedback``): an alarm's windows join the machine's bank
    and the threshold is fitted again; ``undo`` takes the last such feedback back exactly. Each
    returns the machine's new bank and what happened, in words; ValueError says why not."""

    def normal(
        self, machine: str, bank: "MemoryBank", alarm_id: str, embeddings: np.ndarray, by: str, note: str
    ) -> tuple["MemoryBank", dict]: ...

    def undo(
        self, machine: str, bank: "MemoryBank", feedback_id: Optional[str], by: str
    ) -> tuple["MemoryBank", dict]: ...
