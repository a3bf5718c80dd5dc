"""Rebuild the built-in ``default`` bundle: the ``dualbranch`` recipe with 2 s windows, trained with
four seeds on the normal clips of ../shared/data and exported as one ensemble.

The two development benchmarks' test folders (dcase2023t2/valve, mimii/fan) are never trained on;
their train/ clips are, as in DCASE. Usage: ``python -m export.build_default [--data DIR] [--seeds 0 1 2 3]``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .onnx_export import export_bundle
from .train import TrainArgs, train

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "edge_agent" / "models" / "default"
RECIPE = {"window_seconds": 2.0}
EXCLUDE = [
    "dcase2023t2/valve",
    "mimii/fan",
    "mimii_8ch",
]  # benchmark test sets, and the 8-channel copy of a MIMII fan clip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "default")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument(
        "--reuse", action="store_true", help="export existing seed checkpoints in --work instead of retraining them"
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    a.work.mkdir(parents=True, exist_ok=True)
    ckpts = []
    for seed in a.seeds:
        ck = a.work / f"seed{seed}.ckpt"
        ckpts.append(ck)
        if a.reuse and ck.is_file():
            continue
        train(
            TrainArgs(
                data=[str(a.data)],
                out=str(ck),
                epochs=a.epochs,
                seed=seed,
                recipe_config=RECIPE,
                exclude_test_of=EXCLUDE,
            )
        )
    export_bundle(ckpts, a.out, name="default", version=f"0.1.0+{len(ckpts)}seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
