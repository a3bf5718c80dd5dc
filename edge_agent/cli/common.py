"""What every command shares: the usage error (exit code 2), logging set-up and the torch check."""

from __future__ import annotations

import argparse
import logging
import sys

from edge_agent.errors import UserError


class UsageError(UserError):
    """Bad input from the user: exit code 2."""


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def need_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError(
            f"'edge-agent {command}' needs PyTorch, which is not installed. Install the training extra: "
            "pip install 'edge-agent[train]' (on the project's machines: pip install torch==2.13.0 first)"
        ) from None


def help_of(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
