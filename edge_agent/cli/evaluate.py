"""``evaluate``: DCASE-style scores of a model on a dataset folder (``calibration.evaluate``), with
``--adapt`` the first-shot protocol end to end: each machine's model adapted on its train clips."""

from __future__ import annotations

import sys
from pathlib import Path

import edge_agent.cli.adapt as adapt_cli
from edge_agent.cli.adapt import add_options as adapt_options
from edge_agent.cli.calibrate import SCORE_HELP
from edge_agent.cli.common import UsageError
from edge_agent.model.bundle import Bundle


def add_parsers(command) -> None:
    e = command(
        "evaluate",
        help="DCASE-style scores on a dataset folder",
        description="For every machine folder (<machine>/train, <machine>/test) under DATA_DIR: build the bank from "
        "train/ as calibrate does, score test/ as the runtime does, and report AUC (source, target), pAUC, "
        "harmonic mean, precision/recall/F1, DCASE submission CSVs and ROC plots.",
    )
    e.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    e.add_argument("--model", default="default", help="bundle name or directory")
    e.add_argument("--out", type=Path, default=None, help="output folder (default ./evaluation-<model>)")
    e.add_argument("--hop", type=float, default=1.0, help="hop between windows in seconds (default 1.0)")
    e.add_argument("--engine", default="cpu", help="engine: auto, cpu, cuda, tensorrt (default cpu)")
    e.add_argument(
        "--centres", type=int, default=16, help="k-means centres per machine for the source domain (default 16)"
    )
    e.add_argument(
        "--normalise-domains",
        action="store_true",
        help="z-score each domain's distances with its enrolment statistics before taking the minimum",
    )
    e.add_argument(
        "--score",
        default=None,
        metavar="HEAD[+HEAD...]",
        help=SCORE_HELP + "; heads that need a class take the class whose group|section matches the machine folder",
    )
    adapt_options(e, evaluate=True)
    e.set_defaults(func=cmd_evaluate)


def cmd_evaluate(a) -> int:
    from calibration.evaluate import ClipEmbedder, evaluate
    from calibration.report import markdown_table
    from edge_agent.engine import open_engine

    if not a.data_dir.is_dir():
        raise UsageError(f"DATA_DIR {a.data_dir}: no such directory")
    bundle = Bundle.load(a.model)
    engine = open_engine(bundle, a.engine)
    out = a.out or Path(f"evaluation-{bundle.name}")
    adapter = _adapter(a, engine, out / "adapted") if a.adapt else None
    try:
        r = evaluate(
            a.data_dir,
            ClipEmbedder(engine, bundle.frontend, a.hop),
            bundle,
            out,
            progress=True,
            n_centres=a.centres,
            normalise_domains=a.normalise_domains,
            score=a.score,
            adapter=adapter,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    sys.stdout.write(markdown_table(r["summary"]))
    print(f"wrote {out}/results.json, results.md, DCASE CSVs and ROC plots")
    return 0


def _adapter(a, engine, out: Path):
    """machine folder, name, train clips -> (the adapted model's engine or None, what adaptation did)."""
    from calibration.adapt_audio import pieces_from_paths
    from edge_agent.engine import open_engine

    s = adapt_cli.settings(a)
    adapt_cli.generic_only(engine.bundle)
    fe = engine.bundle.frontend

    def adapter(machine_dir: Path, name: str, train):
        pieces, _ = pieces_from_paths([c.path for c in train], fe.sample_rate, fe.window_seconds)
        dest = out / name.replace("/", "_")
        outcome = adapt_cli.adapt(engine, pieces, name, dest, s, (machine_dir,), a.adapt_always)
        print(f"{name}: {outcome.describe()}", file=sys.stderr)
        info = {"kept": outcome.kept, "used": outcome.bundle_dir is not None, **outcome.info}
        if outcome.bundle_dir is None:
            return None, info
        return open_engine(Bundle.load(outcome.bundle_dir), a.engine), info

    return adapter
