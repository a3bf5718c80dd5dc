"""``--adapt`` of ``calibrate`` and ``evaluate``: the options, and the one way from them to
``export.adapt`` (the ``train`` extra: torch is imported only when adaptation is asked for)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from edge_agent.cli.common import UsageError
from edge_agent.model.bundle import Bundle


def add_options(p, evaluate: bool = False) -> None:
    g = p.add_argument_group("field adaptation (needs the train extra: pip install torch==2.13.0 'edge-agent[train]')")
    g.add_argument(
        "--adapt",
        action="store_true",
        help=(
            "first fine-tune a copy of the model on each machine's train/ clips, then score with it where a label-free "
            "check keeps it (docs/model.md, 'Field adaptation')"
            if evaluate
            else "first fine-tune a copy of the model on this machine's audio and enrol with it, if a label-free check "
            "on held-out audio says it hears synthetic faults better than the generic model, beyond the check's "
            "noise (else the generic model is enrolled as usual); the copy is kept beside the bank and 'run' picks it "
            "up at its next start or reload. Starts a new bank"
        ),
    )
    g.add_argument(
        "--corpus",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR",
        help="folders of other machines' normal clips (DCASE layout, e.g. the DCASE development sets) that the "
        "adapted model learns to tell this machine from (outlier exposure); default: none",
    )
    g.add_argument("--adapt-steps", type=int, default=150, metavar="N", help="optimiser steps (default 150)")
    g.add_argument(
        "--adapt-minutes",
        type=float,
        default=60.0,
        metavar="M",
        help="adapt on at most this much audio, drawn evenly from what is given (default 60)",
    )
    g.add_argument(
        "--adapt-device", default="auto", metavar="DEV", help="auto (CUDA when present), cpu or cuda (default auto)"
    )
    if not evaluate:
        g.add_argument(
            "--only-if-adapted",
            action="store_true",
            help="with --adapt: when the check does not keep the adapted model, leave the bank as it is (the end of "
            "a learning period runs this, so the bank learnt from the whole period stays)",
        )
    g.add_argument(
        "--adapt-always",
        action="store_true",
        help="use the adapted model whatever the check says (to measure adaptation and the check, or where you have "
        "evidence of your own that it hears your machine better)",
    )


def settings(a):
    """AdaptSettings from the options; a clear message when the train extra is missing."""
    try:
        from export.adapt import AdaptSettings
    except ImportError as e:
        raise UsageError(
            f"--adapt needs PyTorch and ONNX ({e}); install the train extra: pip install torch==2.13.0 "
            "'edge-agent[train]'"
        ) from None
    if a.adapt_steps < 1 or a.adapt_minutes <= 0:
        raise UsageError("--adapt-steps must be 1 or more and --adapt-minutes above 0")
    for d in a.corpus:
        if not Path(d).is_dir():
            raise UsageError(f"--corpus {d}: no such folder")
    return AdaptSettings(
        steps=a.adapt_steps,
        max_minutes=a.adapt_minutes,
        device=a.adapt_device,
        corpus=tuple(str(d) for d in a.corpus),
    )


def generic_only(bundle: Bundle) -> None:
    if bundle.manifest.adapted:
        raise UsageError(
            f"model {bundle.name} is already adapted to one machine; adapt from the model it came from "
            f"({bundle.manifest.adapted.get('from', {}).get('name', '?')})"
        )


def adapt(engine, pieces, machine: str, out: Path, s, exclude=(), keep_anyway: bool = False, progress: bool = True):
    """Adapt to ``pieces`` (calibration.adapt_audio); the corpus is read here, without ``exclude``."""
    from calibration.adapt_audio import corpus_pieces
    from export.adapt import AdaptError, adapt_machine
    from export.onnx_torch import UnsupportedGraph

    fe = engine.bundle.frontend
    corpus = ()
    if s.corpus:
        corpus = tuple(corpus_pieces(s.corpus, fe.sample_rate, fe.window_seconds, exclude, s.corpus_clips, s.seed))
    try:
        return adapt_machine(engine, pieces, machine, out, s, corpus, progress=progress, keep_anyway=keep_anyway)
    except UnsupportedGraph as e:
        raise UsageError(f"--adapt: model {engine.bundle.name}: {e}") from None
    except AdaptError as e:
        raise UsageError(str(e)) from None


def install(staged: Path, final: Path) -> None:
    """The staged adapted model takes the place of the machine's previous one."""
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)


def discard(path: Optional[Path]) -> None:
    if path is not None and path.exists():
        shutil.rmtree(path, ignore_errors=True)
