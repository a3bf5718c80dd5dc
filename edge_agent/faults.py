"""No thread dies silently: every exception outside the agent's main loop is logged, counted and
either recovered from or shown in health.

One ``Faults`` per agent. Callbacks that run on other threads (paho's, the status page's, the
evidence writer's) go through ``guard``: the exception is logged with its traceback, counted
under a place name, and the callback returns a fallback, so the thread carries on. Threads the
agent starts run their body under ``supervise``: an exception is counted and the body restarted
after a back-off. A thread that still ends by an exception (a library's own thread) reaches the
``threading.excepthook`` installed by ``install_excepthook``, which counts it and marks the thread
dead: health then stops the systemd watchdog and the metrics and healthcheck say which one.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable, Optional

log = logging.getLogger("edge_agent.faults")

BACKOFF = (1.0, 30.0)  # first and longest wait before a supervised body is run again


class Faults:
    """Exceptions caught per place, the last of each, and the threads that died of one."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.last: dict[str, str] = {}  # place -> "ExcType: message" of the latest
        self.dead: dict[str, str] = {}  # thread name -> why it ended, while it is not running again

    def record(self, place: str, exc: BaseException, what: str = "failed; carrying on") -> None:
        text = f"{type(exc).__name__}: {exc}"[:300]
        with self._lock:
            self.counts[place] = self.counts.get(place, 0) + 1
            self.last[place] = text
        log.error("%s %s (%s)", place, what, text, exc_info=exc)

    def mark_dead(self, thread: str, why: str) -> None:
        with self._lock:
            self.dead[thread] = why[:300]

    def revive(self, thread: str) -> None:
        with self._lock:
            self.dead.pop(thread, None)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> tuple[dict[str, int], dict[str, str]]:
        with self._lock:
            return dict(self.counts), dict(self.dead)

    def problem(self) -> Optional[str]:
        """What health must report: a thread that died and was not restarted, else None."""
        with self._lock:
            if not self.dead:
                return None
            return "; ".join(f"thread {t} died ({why})" for t, why in sorted(self.dead.items()))

    def guard(self, place: str, fallback: Any = None) -> Callable[[Callable], Callable]:
        """Decorator: the wrapped callable logs, counts and returns ``fallback`` instead of raising."""

        def wrap(fn: Callable) -> Callable:
            @functools.wraps(fn)
            def guarded(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - the point: no exception leaves a callback
                    self.record(place, e)
                    return fallback

            return guarded

        return wrap

    def supervise(self, place: str, body: Callable[[], None], stop: threading.Event) -> Callable[[], None]:
        """A thread target that runs ``body`` until it returns or ``stop`` is set, restarting it with
        a back-off when it raises. While it waits to restart, the thread counts as dead in health."""

        def run() -> None:
            wait = BACKOFF[0]
            while True:
                try:
                    body()
                    return
                except Exception as e:  # noqa: BLE001 - recorded and restarted
                    self.record(place, e, f"stopped; restarting in {wait:.0f} s")
                    self.mark_dead(threading.current_thread().name, f"{type(e).__name__}: {e}")
                if stop.wait(wait):
                    return
                self.revive(threading.current_thread().name)
                wait = min(BACKOFF[1], 2 * wait)

        return run


_hooked: list[Faults] = []


def install_excepthook(faults: Faults) -> None:
    """Route exceptions that end any thread (paho's network thread included) to ``faults``. The
    latest agent's ``Faults`` gets them (logged with the traceback); without an agent, the
    interpreter's own hook prints it as before."""
    if not _hooked:
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if _hooked and args.exc_type is not SystemExit and args.exc_value is not None:
                name = args.thread.name if args.thread is not None else "?"
                f = _hooked[-1]
                f.record(f"thread {name}", args.exc_value, "ended by an exception")
                f.mark_dead(name, f"{args.exc_type.__name__}: {args.exc_value}")
                return
            previous(args)

        threading.excepthook = hook
    _hooked.append(faults)


def remove_excepthook(faults: Faults) -> None:
    if faults in _hooked:
        _hooked.remove(faults)
