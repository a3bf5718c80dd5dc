"""Assembling the running agent: machine streams, the durable sink (MQTT or the outbox alone), the
console, the status page, health (systemd notify, watchdog) and metrics. The CLI's ``run``, the
demo and the benchmarks build the daemon here, so there is one wiring.

Everything is made before the agent and handed to its constructor: the streams, the command desk
(which MQTT and the page submit to), the sinks in order (the durable one first: an event shown on
the console is already kept; the one that releases the state dir last). The runtime never imports
calibration; a learning period's learners come in through ``learner_factory``
(``calibration.learning.learner_factory``, passed by the CLI).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from edge_agent.audio import open_source
from edge_agent.clock import SYSTEM, Clock
from edge_agent.config import Config, require_machines, usable_state_dir
from edge_agent.engine import Engine
from edge_agent.errors import UserError
from edge_agent.faults import Faults, install_excepthook, remove_excepthook
from edge_agent.model.bundle import Bundle
from edge_agent.publish.mqtt import MQTTPublisher
from edge_agent.publish.outbox import Outbox
from edge_agent.publish.sinks import ConsoleSink, OutboxOnlySink, open_outbox
from edge_agent.runtime.agent import Agent, LearnerFactory, stream_state
from edge_agent.runtime.commands import CommandDesk
from edge_agent.runtime.learner import FeedbackEnroller
from edge_agent.runtime.models import open_agent_engine
from edge_agent.runtime.sink import Sink
from edge_agent.runtime.stream import MachineStream
from edge_agent.scoring.bank import load_machine_bank
from edge_agent.state.lock import StateLock
from edge_agent.state.paths import trends_path
from edge_agent.trends.recorder import TrendRecorder
from edge_agent.trends.store import TrendStore

log = logging.getLogger("edge_agent.runtime.daemon")


@dataclass
class Daemon:
    agent: Agent
    outbox: Outbox
    durable: Sink  # MQTTPublisher, or OutboxOnlySink without an mqtt section
    console: Optional[ConsoleSink]
    page: Optional[Sink] = None  # web.page.StatusPage when web.listen is configured


def open_streams(
    cfg: Config, bundle: Bundle, source_factory=open_source, clock: Clock = SYSTEM
) -> dict[str, MachineStream]:
    """Each configured machine's stream: its input opened (not started) and its bank loaded."""
    require_machines(cfg)
    state_dir = cfg.resolved_state_dir()
    return {
        name: MachineStream(
            name,
            mc,
            source_factory(name, mc, bundle.frontend.sample_rate),
            bundle.frontend,
            load_machine_bank(state_dir, name, bundle),
            clock=clock,
        )
        for name, mc in cfg.machines.items()
    }


def agent_from_config(
    cfg: Config,
    sinks: list[Sink],
    source_factory=open_source,
    bundle: Optional[Bundle] = None,
    engine: Optional[Engine] = None,
    clock: Clock = SYSTEM,
    **kw,
) -> Agent:
    """An agent with the given sinks only (no state-dir lock, MQTT, page or health): replays in
    benchmarks and tests."""
    bundle = bundle or Bundle.load(cfg.model)
    engine = engine or open_agent_engine(cfg, bundle)
    streams = open_streams(cfg, bundle, source_factory, clock)
    return Agent(cfg, bundle, engine, streams, sinks, clock=clock, **kw)


class _Release(Sink):
    """The last sink: after every other one has closed, the excepthook goes and the state dir is free."""

    def __init__(self, lock: StateLock, faults: Faults):
        self.lock, self.faults = lock, faults

    def close(self) -> None:
        remove_excepthook(self.faults)
        self.lock.release()


def build_daemon(
    cfg: Config,
    *,
    config_path: Optional[Path] = None,
    print_scores: bool = False,
    console: bool = True,
    learner_factory: Optional[Callable[..., LearnerFactory]] = None,  # (cfg, bundle, faults=) -> LearnerFactory
    feedback_factory: Optional[Callable[[Config, Bundle], FeedbackEnroller]] = None,
    bundle: Optional[Bundle] = None,
    engine: Optional[Engine] = None,
    source_factory=open_source,
    health: bool = True,
    sinks: tuple[Sink, ...] = (),
    clock: Clock = SYSTEM,
) -> Daemon:
    """The agent with every sink attached and started (the MQTT client connects in the background);
    ``agent.run()`` is all that is left to do. ``sinks``: more, after the built-in ones."""
    state_dir = usable_state_dir(cfg.resolved_state_dir())  # before anything is loaded: a message, not a traceback
    with ExitStack() as on_failure:
        lock = StateLock.acquire(state_dir)  # one agent per folder
        on_failure.callback(lock.release)
        bundle = bundle or Bundle.load(cfg.model)
        engine = engine or open_agent_engine(cfg, bundle)
        streams = open_streams(cfg, bundle, source_factory, clock)
        faults = Faults()  # exceptions of every thread, for logs, metrics and health
        model_info = bundle.describe()
        desk = CommandDesk()  # MQTT and the status page hand their commands to the agent's thread
        trends = TrendRecorder(TrendStore(trends_path(state_dir)), list(streams), clock)
        on_failure.callback(trends.store.close)
        outbox = open_outbox(cfg)
        if cfg.mqtt is not None:
            durable = MQTTPublisher(
                cfg,
                outbox,
                list(cfg.machines),
                model_info,
                states=lambda: [(m, stream_state(s, model_info, severity=trends.severity)) for m, s in streams.items()],
                faults=faults,
                on_command=desk.submit if cfg.mqtt.commands else None,
            )
        else:
            log.info("no mqtt section: alarms go to the console and the outbox %s", outbox.path)
            durable = OutboxOnlySink(outbox)
        out: list[Sink] = [durable]
        con = ConsoleSink(scores=print_scores) if console else None
        out += [con] if con is not None else []
        page = None
        if cfg.web is not None:  # before the broker connects: a port in use stops the start cleanly
            from edge_agent.web.page import StatusPage

            page = StatusPage(cfg, streams, model_info, faults, desk, trends)
            page.start()
            on_failure.callback(page.close)
            out.append(page)
        if health:
            from edge_agent.health.monitor import Health, start_metrics

            out.append(Health(streams, faults, clock=clock))
            if cfg.metrics is not None:
                try:
                    out.append(start_metrics(streams, faults, cfg.metrics.listen, durable))
                except OSError as e:
                    raise UserError(
                        f"metrics.listen {cfg.metrics.listen}: cannot listen there ({e.strerror})"
                    ) from None
        out += [trends, *sinks, _Release(lock, faults)]  # the lock is held until every sink has closed
        agent = Agent(
            cfg,
            bundle,
            engine,
            streams,
            out,
            commands=desk,
            learners=learner_factory(cfg, bundle, faults=faults) if learner_factory is not None else None,
            config_path=config_path,
            evidence_url=page.url if page is not None else None,
            faults=faults,
            clock=clock,
            severity=trends.severity,
            feedback=feedback_factory(cfg, bundle) if feedback_factory is not None else None,
        )
        if isinstance(durable, MQTTPublisher):
            if cfg.mqtt.commands:
                log.info(
                    "MQTT: operator commands are ON (anyone allowed to publish to the command topics can use them)"
                )
            durable.start()
        # An exception that ends any thread (a library's too) is logged, counted and shown in health
        install_excepthook(faults)
        on_failure.pop_all()
        return Daemon(agent, outbox, durable, con, page)
