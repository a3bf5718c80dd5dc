"""SIGHUP: the running agent re-reads its banks and the config settings that can change without a
restart (hop, k, alarm rules, silence timeout); other changes are named in a log line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

from edge_agent.config import Config, load_config
from edge_agent.model.bundle import BundleError
from edge_agent.scoring.bank import BankError, load_machine_bank

if TYPE_CHECKING:
    from edge_agent.faults import Faults
    from edge_agent.model.bundle import Bundle
    from edge_agent.runtime.stream import MachineStream

log = logging.getLogger("edge_agent.runtime.agent")


class Reloadable(Protocol):
    """What a reload changes: the agent, seen from here (``runtime.agent.Agent`` is one)."""

    cfg: Config
    config_path: Optional[Path]
    bundle: "Bundle"
    streams: dict[str, "MachineStream"]

    faults: "Faults"

    def attach_learner(self, s: "MachineStream") -> None: ...

    def use_model(self, s: "MachineStream") -> None: ...

    def publish_state(self, s: "MachineStream", reason: str = "") -> None: ...


def reload_agent(agent: Reloadable) -> None:
    """SIGHUP: re-read banks, and the config settings that can change without a restart
    (hop, k, alarm rules, silence timeout). Other changes are named in a log line."""

    state_dir = agent.cfg.resolved_state_dir()
    if agent.config_path is not None:
        try:
            new = load_config(agent.config_path)
        except Exception as e:  # noqa: BLE001 - a bad edit must not stop a running agent
            log.error("reload: keeping the running config: %s", e)
            new = None
        if new is not None:
            for key in ("model", "engine", "mqtt", "metrics", "state_dir", "node_id"):
                if getattr(new, key) != getattr(agent.cfg, key):
                    log.warning("reload: '%s' changed; that needs a restart (systemctl restart edge-agent)", key)
            if set(new.machines) != set(agent.cfg.machines):
                log.warning("reload: machines were added or removed; that needs a restart")
            for m, s in agent.streams.items():
                if m in new.machines:
                    mc = new.machines[m]
                    if mc.input != s.cfg.input:
                        log.warning("reload: machines.%s.input changed; that needs a restart", m)
                    mc = mc.model_copy(update={"input": s.cfg.input})
                    s.apply_config(mc)
                    agent.cfg.machines[m] = mc
    for m, s in agent.streams.items():
        try:
            bank = load_machine_bank(state_dir, m, agent.bundle)
        except (BankError, BundleError) as e:
            log.error("reload: %s: keeping the running bank: %s", m, e)
            continue
        before = s.bank, s.engine
        s.set_bank(bank)
        try:
            agent.use_model(s)  # a bank made with an adapted model brings that model's engine
        except Exception as e:  # noqa: BLE001 - an adapted model that cannot be opened: the running one stays
            agent.faults.record(f"reload: {m}: adapted model", e, "keeping the running bank")
            s.set_bank(before[0])
            s.engine = before[1]
            continue
        log.info(
            "reload: %s: %s",
            m,
            f"bank version {bank.version}, threshold {bank.threshold:.4f}" if bank else "no bank (uncalibrated)",
        )
        agent.attach_learner(s)
        agent.publish_state(s, "reloaded")
