"""``edge-agent``: the one command-line entry point, and the only code that reads argparse namespaces.

Exit codes: 0 ok, 2 usage or config error (the message names the bad key or file and why),
1 runtime failure. Commands that need torch (train, export) or TensorRT (build-engine) import it
only when they run and say how to install it when it is missing.
"""

from __future__ import annotations

import argparse
import sys

from edge_agent import __version__
from edge_agent.cli import calibrate, demo, evaluate, model, report, run
from edge_agent.cli.common import UsageError, setup_logging
from edge_agent.errors import UserError

__all__ = ["UsageError", "build_parser", "main"]


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (``edge-agent run -v`` as ``edge-agent -v run``)."""
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument(
        "-v", "--verbose", dest="verbose_sub", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    return c


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog="edge-agent",
        description="Listen to machines, learn what normal sounds like, and raise MQTT alarms when they start to "
        "sound wrong.",
        epilog="Start with 'edge-agent demo'. Docs: README.md and docs/ in the source tree.",
    )
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    run.add_parsers(command)
    demo.add_parsers(command)
    calibrate.add_parsers(command, common)
    evaluate.add_parsers(command)
    model.add_parsers(command)
    report.add_parsers(command)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "func", None):
        parser.print_help()
        return 2
    verbose = a.verbose + getattr(a, "verbose_sub", 0)
    setup_logging(verbose if a.command not in ("run", "demo") else max(1, verbose))
    from edge_agent.engine import EngineError

    try:
        return int(a.func(a) or 0)
    except UserError as e:
        print(f"edge-agent {a.command}: {e}", file=sys.stderr)
        return 2
    except EngineError as e:
        print(f"edge-agent {a.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
