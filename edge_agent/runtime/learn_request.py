"""The learning request: the file through which ``calibrate --learn`` and the ``learn`` command ask
the running agent to learn a machine from its own sound (``calibration/learning.py`` takes it up)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.config import MAX_LEARN_SECONDS, MIN_LEARN_SECONDS, learn_seconds
from edge_agent.scoring.heads import REGISTRY
from edge_agent.state.atomic import atomic_write
from edge_agent.state.paths import learning_paths

log = logging.getLogger("edge_agent.learning")
MAX_REQUEST_BYTES = 4096


class LearningRequest(BaseModel):
    """learning.json: a period asked for, and how far it got (checked at every start: a bad file
    is set aside with a message, never a crash loop)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    seconds: float = Field(ge=MIN_LEARN_SECONDS, le=MAX_LEARN_SECONDS)
    done: float = Field(default=0.0, ge=0)
    blocks_seen: int = Field(default=0, ge=0)
    score: Optional[str] = Field(default=None, max_length=100)
    # calibrate --learn --adapt: keep a sample of the audio and adapt the model to it at the end
    adapt: bool = False
    corpus: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=8)
    adapt_steps: Optional[int] = Field(default=None, ge=1, le=100_000)


def read_request(path: Path) -> Optional[LearningRequest]:
    """The request at ``path``, or None when there is none or it cannot be used (then it is renamed
    to ``learning.json.invalid`` and the reason logged, so the machine keeps its bank)."""
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_REQUEST_BYTES:
            raise ValueError(f"over {MAX_REQUEST_BYTES} bytes")
        return LearningRequest.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError, OSError) as e:
        why = (
            "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()[:3])
            if isinstance(e, ValidationError)
            else str(e)
        )
        aside = path.with_name(path.name + ".invalid")
        log.error(
            "%s: cannot use this learning request (%s); set aside as %s. Ask again: edge-agent calibrate --learn 24h",
            path,
            why,
            aside.name,
        )
        try:
            path.replace(aside)
        except OSError:
            pass
        return None


def request_learning(
    state_dir: Path,
    machine: str,
    seconds: float,
    score: Optional[str] = None,
    adapt: bool = False,
    corpus=(),
    adapt_steps: Optional[int] = None,
) -> Path:
    """Write (or restart) a learning request for the running agent; ``score``: the head the learned
    bank scores with (``calibrate --score``; None: the bundle's own); ``adapt``: adapt the model to a
    sample of the period's audio at its end (``corpus``: other machines' clips for that)."""
    learn_seconds(seconds)
    meta, data = learning_paths(state_dir, machine)
    data.unlink(missing_ok=True)
    req = {"seconds": seconds, "done": 0.0, "requested": time.time(), "blocks_seen": 0}
    if adapt:
        req.update(adapt=True, corpus=[str(c) for c in corpus], adapt_steps=adapt_steps)
    with atomic_write(meta, "w") as f:
        json.dump({**req, "score": score} if score else req, f)
    return meta


def learnable_score(spec: Optional[dict]) -> Optional[str]:
    """A bank's score spec as ``--score`` text when a learning period can make it again (k-NN and
    indicators, alone or together), else None: the operator's re-learning keeps the machine's head."""
    if not spec:
        return None
    kinds = [m["kind"] for m in spec["members"]] if spec["kind"] == "ensemble" else [spec["kind"]]
    return "+".join(kinds) if all(k in REGISTRY and REGISTRY[k].learnable for k in kinds) else None
