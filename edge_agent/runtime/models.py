"""Which engine scores each machine: the shared one, or the engine of the machine's own adapted
model (``calibrate --adapt`` writes it beside the bank, and the bank names the model it was made
with). Adapted models take the shared model's input, so their windows come from the same front end;
each is opened once, at start or at the reload that first needs it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from edge_agent.config import Config, realtime_only
from edge_agent.engine import Engine, open_engine
from edge_agent.model.bundle import Bundle
from edge_agent.scoring.bank import BankError, MemoryBank, machine_model

log = logging.getLogger("edge_agent.runtime.models")


def open_agent_engine(cfg: Config, bundle: Bundle) -> Engine:
    # no memory arena nor memory pattern: they held the largest batch's buffers for good (9 + 4.5 MB
    # of a fast replay, default model)
    return open_engine(bundle, cfg.engine, spin=not realtime_only(cfg), arena=False)


class Models:
    """The machines' adapted models, each engine opened once (the shared engine stays the agent's)."""

    def __init__(self, cfg: Config, bundle: Bundle):
        self.cfg, self.bundle = cfg, bundle
        self._own: dict[str, Engine] = {}  # adapted model sha256 -> its engine

    def engine_for(self, machine: str, bank: Optional[MemoryBank]) -> Optional[Engine]:
        """The engine ``bank`` needs: None for the shared one, else the machine's adapted model's."""
        if bank is None or bank.model_sha256 == self.bundle.sha256:
            return None
        sha = bank.model_sha256
        if sha not in self._own:  # load_machine_bank matched the bank to it; load it once more to open it
            own = machine_model(Path(self.cfg.resolved_state_dir()), machine, self.bundle, bank)
            if own.sha256 != sha:  # the adapted model was removed or replaced since the bank was read
                raise BankError(f"bank of machine {machine} needs model {sha[:12]}..., which is gone; recalibrate")
            self._own[sha] = open_agent_engine(self.cfg, own)
            log.info("%s: runs its adapted model %s (version %s)", machine, own.name, own.version)
        return self._own[sha]
