"""`edge-agent ARGS` for tests: in this process through `main(argv)` (no interpreter start, no
re-import: the cheap default), or in a child process where the test needs one (a blocked torch
import, another environment, signals, a kill)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys

from tests.conftest import ROOT


def refuse(*packages: str) -> str:
    """Code for a meta-path finder that refuses these packages: any import of them in the child
    process fails loudly (an import guarded by try/except is left to decide without them)."""
    return (
        "import sys\n"
        "class _Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {packages!r}:\n"
        "            raise ImportError(f'{name} is blocked: this run must not import it')\n"
        "sys.meta_path.insert(0, _Refuse())\n"
    )


BLOCK_TORCH = refuse("torch")  # the runtime must never import torch
MAIN = "import sys\nfrom edge_agent.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def cli_process(*args, block_torch=False, block=(), timeout=300, env=None) -> subprocess.CompletedProcess:
    """``block``: more packages the child must not import (see ``refuse``)."""
    code = (BLOCK_TORCH if block_torch else "") + (refuse(*block) if block else "") + MAIN
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=e
    )


def cli_in_process(*args) -> subprocess.CompletedProcess:
    """Run the CLI as the console script would, in this process: stdout, stderr and the log (which
    ``setup_logging`` sends to stderr) are captured; cwd, root logging and signal handlers are put
    back afterwards."""
    from edge_agent.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    cwd = os.getcwd()
    root.handlers = []  # so setup_logging's basicConfig installs its handler on the captured stderr
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse: --help, usage errors
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        os.chdir(cwd)
        for h in root.handlers:
            h.close()
        root.handlers, root.level = saved_handlers, saved_level
        for s, h in saved_signals.items():
            signal.signal(s, h)
    return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())


def cli(*args, block_torch=False, block=(), timeout=300, env=None) -> subprocess.CompletedProcess:
    """In this process unless the call needs a child (an import blocked or another environment)."""
    if block_torch or block or env:
        return cli_process(*args, block_torch=block_torch, block=block, timeout=timeout, env=env)
    return cli_in_process(*args)


def spawn(*args, **popen) -> subprocess.Popen:
    """`edge-agent ARGS` as a background process (for signals and SIGKILL)."""
    return subprocess.Popen([sys.executable, "-c", MAIN, *map(str, args)], cwd=ROOT, **popen)
