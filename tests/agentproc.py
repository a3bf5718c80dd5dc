"""An `edge-agent run` process whose stdout and stderr lines are collected as they come."""

from __future__ import annotations

import subprocess
import threading
import time

from tests.test_run_replay import spawn


class AgentProcess:
    def __init__(self, *args, env=None):
        self.p = spawn(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(s, d), daemon=True)
            for s, d in ((self.p.stdout, self.out), (self.p.stderr, self.err))
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream, lines):
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60.0, count: int = 1, stderr: bool = False) -> bool:
        """Wait until ``text`` has appeared on ``count`` lines of stdout (or stderr)."""
        lines = self.err if stderr else self.out
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if sum(text in ln for ln in lines) >= count:
                return True
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        return sum(text in ln for ln in lines) >= count

    def finish(self, timeout: float = 60.0) -> int:
        rc = self.p.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.finish(10)
