"""Secrets come from a file or from a systemd credential (``LoadCredential=``), never from the YAML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from edge_agent.errors import UserError


def read_secret(file: Optional[Path], credential: str, key: str) -> Optional[str]:
    """From ``file``, else ``$CREDENTIALS_DIRECTORY/<credential>``; None when neither is there.
    ``key`` names the config key in the error (e.g. ``mqtt.password_file``)."""
    path = None
    if file is not None:
        path = Path(file)
    elif os.environ.get("CREDENTIALS_DIRECTORY"):
        cand = Path(os.environ["CREDENTIALS_DIRECTORY"]) / credential
        path = cand if cand.is_file() else None
    if path is None:
        return None
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as e:
        raise UserError(f"{key} {path}: cannot read it ({e.strerror})") from None
