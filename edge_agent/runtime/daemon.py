"""Assembling the running agent: machine streams, the durable sink (MQTT or the outbox alone), the
console, health (systemd notify, watchdog) and metrics. The CLI's ``run``, the demo and the
benchmarks build the daemon here, so there is one wiring.

The runtime never imports calibration; a learning period's learners come in through
``learner_factory`` (``calibration.learning.learner_factory``, passed by the CLI).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from edge_agent.audio import open_source
from edge_agent.config import Config, usable_state_dir
from edge_agent.engine import Engine
from edge_agent.errors import UserError
from edge_agent.faults import install_excepthook, remove_excepthook
from edge_agent.model.bundle import Bundle
from edge_agent.publish.mqtt import MQTTPublisher
from edge_agent.publish.outbox import Outbox
from edge_agent.publish.sinks import ConsoleSink, OutboxOnlySink, open_outbox
from edge_agent.runtime.agent import Agent
from edge_agent.runtime.commands import CommandDesk
from edge_agent.state.lock import StateLock

log = logging.getLogger("edge_agent.runtime.daemon")


@dataclass
class Daemon:
    agent: Agent
    outbox: Outbox
    durable: object  # MQTTPublisher, or OutboxOnlySink without an mqtt section
    console: Optional[ConsoleSink]
    page: Optional[object] = None  # web.page.StatusPage when web.listen is configured


def build_daemon(
    cfg: Config,
    *,
    config_path: Optional[Path] = None,
    print_scores: bool = False,
    console: bool = True,
    learner_factory: Optional[Callable[[Config, Bundle], Callable]] = None,
    bundle: Optional[Bundle] = None,
    engine: Optional[Engine] = None,
    source_factory=open_source,
    health: bool = True,
) -> Daemon:
    """The agent with every sink attached and started (the MQTT client connects in the background);
    ``agent.run()`` is all that is left to do."""
    state_dir = usable_state_dir(cfg.resolved_state_dir())  # before anything is loaded: a message, not a traceback
    with ExitStack() as on_failure:
        lock = StateLock.acquire(state_dir)  # one agent per folder
        on_failure.callback(lock.release)
        agent = Agent.from_config(cfg, [], source_factory=source_factory, bundle=bundle, engine=engine)
        agent.config_path = config_path
        if learner_factory is not None:
            agent.use_learners(learner_factory(cfg, agent.bundle))
        con = ConsoleSink() if console else None
        if con is not None and print_scores:
            agent.on_window.append(con.window)
        outbox = open_outbox(cfg)
        if cfg.mqtt is not None:
            durable = MQTTPublisher(
                cfg, outbox, list(cfg.machines), agent.bundle.name, states=agent.current_states, faults=agent.faults
            )
        else:
            log.info("no mqtt section: alarms go to the console and the outbox %s", outbox.path)
            durable = OutboxOnlySink(outbox)
        # The durable sink first: an event printed on the console is already in the outbox.
        agent.sinks += [durable] + ([con] if con is not None else [])
        agent.status_sources.append(durable.status_line)
        # MQTT and the status page hand their commands to the agent's thread, and wake it
        agent.commands = CommandDesk(wake=agent.wake)
        page = None
        if cfg.web is not None:  # before the broker connects: a port in use stops the start cleanly
            from edge_agent.web.page import StatusPage

            page = StatusPage(agent, cfg.web)
            page.start()
            agent.sinks.append(page)
            agent.on_window.append(page.board.window)
            agent.alarms.evidence_base_url = page.url
        if isinstance(durable, MQTTPublisher):
            if cfg.mqtt.commands:
                durable.on_command = agent.commands.submit
                log.info(
                    "MQTT: operator commands are ON (anyone allowed to publish to the command topics can use them)"
                )
            durable.start()
        if health:
            from edge_agent.health.monitor import Health, start_metrics

            Health(agent)
            if cfg.metrics is not None:
                try:
                    start_metrics(agent, cfg.metrics.listen, durable)
                except OSError as e:
                    raise UserError(
                        f"metrics.listen {cfg.metrics.listen}: cannot listen there ({e.strerror})"
                    ) from None
        # An exception that ends any thread (a library's too) is logged, counted and shown in health
        install_excepthook(agent.faults)
        agent.on_closed.append(lambda: remove_excepthook(agent.faults))
        agent.on_closed.append(lock.release)  # held until the agent has closed its sinks
        on_failure.pop_all()
        return Daemon(agent, outbox, durable, con, page)
