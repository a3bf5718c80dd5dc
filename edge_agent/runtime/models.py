"""Which engine scores each machine: the shared one, or the engine of the machine's own adapted
model (``calibrate --adapt`` writes it beside the bank, and the bank names the model it was made
with). Adapted models take the shared model's input, so their windows come from the same front end;
each is opened once, at start or at the reload that first needs it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

from edge_agent.config import Config, realtime_only
from edge_agent.engine import Engine, open_engine
from edge_agent.model.bundle import Bundle
from edge_agent.scoring.bank import MemoryBank, machine_model

log = logging.getLogger("edge_agent.runtime.models")


def open_agent_engine(cfg: Config, bundle: Bundle) -> Engine:
    # no memory arena nor memory pattern: they held the largest batch's buffers for good (9 + 4.5 MB
    # of a fast replay, default model)
    return open_engine(bundle, cfg.engine, spin=not realtime_only(cfg), arena=False)


class Models:
    def __init__(self, cfg: Config, bundle: Bundle, engine: Engine, opener: Optional[Callable[..., Engine]] = None):
        self.cfg, self.bundle, self.engine = cfg, bundle, engine
        self.opener = opener or open_agent_engine
        self._own: dict[str, Engine] = {}  # adapted model sha256 -> its engine

    def engine_for(self, machine: str, bank: Optional[MemoryBank]) -> Optional[Engine]:
        """The engine ``bank`` needs: None for the shared one, else the machine's adapted model's."""
        state_dir = Path(self.cfg.resolved_state_dir())
        own = machine_model(state_dir, machine, self.bundle, bank)
        if own is self.bundle:
            return None
        if own.sha256 not in self._own:
            self._own[own.sha256] = self.opener(self.cfg, own)
            log.info("%s: runs its adapted model %s (version %s)", machine, own.name, own.version)
        return self._own[own.sha256]
