"""Quality benchmark: DCASE scores of every recipe (over several training seeds, with the spread),
the built-in default model and the training-free references, on the two development benchmarks.

Every system is scored by the same code as `edge-agent evaluate` (bank from train/, clip score =
mean of window scores, hop 1 s). Prints a table, writes JSON, and rewrites the table between the
markers in docs/model.md.

    python benchmarks/quality.py                       # train missing seeds, evaluate everything
    python benchmarks/quality.py --seeds 0 1 2 3 --work runs/default   # reuse checkpoints found there
    python benchmarks/quality.py --update --bundle 'stgram=runs/recipes/stgram-seed0,runs/recipes/stgram-seed1,...'
        # score only these bundles (every score head they carry; several paths = seeds, mean ± std)
        # and keep the other rows of benchmarks/results/quality.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.evaluate import ClipEmbedder, evaluate  # noqa: E402
from calibration.metrics import auc_by_attribute, bootstrap_hmean  # noqa: E402
from edge_agent.engine import OnnxEngine  # noqa: E402
from edge_agent.model.bundle import Bundle  # noqa: E402

BENCHMARKS = {"valve": "dcase2023t2/valve", "fan": "mimii/fan"}
# Reference measurements on this machine type (from the evaluation issue), for comparison.
PUBLISHED = {
    "log-mel statistics k-NN (reference measurement)": {"valve": 52.02, "fan": 71.05},
    "whole-clip spectrum k-NN (reference measurement)": {"valve": 55.97, "fan": 57.14},
    "DCASE 2023 autoencoder baseline, 100 epochs (reference measurement)": {"valve": 52.0, "fan": 63.6},
}
MARK_BEGIN, MARK_END = "<!-- quality-table:begin -->", "<!-- quality-table:end -->"
PER_BUNDLE = ("hmean_ci", "by_attribute")  # a bundle's own intervals: not averaged over seeds
DEFAULT_ROW = "default model (ensemble of the seeds above)"
FAST_ROW = "fast model (one network distilled from the default; opt-in)"
# the default model with the model-free indicators head (docs/model.md), and the indicators alone
HEAD_ROWS = {
    "default model, --score knn+indicators (opt-in)": "knn+indicators",
    "level, crest factor, kurtosis alone, --score indicators (no model; opt-in)": "indicators",
}


def score_bundle(bundle_dir, data: Path, score: str = "knn") -> dict:
    b = Bundle.load(bundle_dir)
    emb = ClipEmbedder(OnnxEngine(b, "cpu"), b.frontend, 1.0)
    out = {}
    for name, rel in BENCHMARKS.items():
        ev = evaluate(data / rel, emb, b, progress=False, score=score)
        sec = next(iter(next(iter(ev["summary"]["machines"].values()))["sections"].values()))
        out[name] = {k: 100 * v for k, v in sec.items() if k.startswith(("auc", "pauc", "hmean"))}
        m = ev["results"][0]  # one machine, one section per benchmark
        lo, hi = bootstrap_hmean([c.condition == "anomaly" for c in m.clips], m.scores, [c.domain for c in m.clips])
        out[name]["hmean_ci"] = [100 * lo, 100 * hi]
        attrs = [",".join(f"{k}={v}" for k, v in c.attributes) for c in m.clips]
        if any(attrs):  # one operating condition at a time (valve: its four patterns)
            by = auc_by_attribute([c.condition == "anomaly" for c in m.clips], m.scores, attrs)
            out[name]["by_attribute"] = {k: [100 * x for x in v] for k, v in by.items()}
    return out


def aggregate(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every score."""
    return {
        bench: {
            k: (float(np.mean([s[bench][k] for s in per_seed])), float(np.std([s[bench][k] for s in per_seed])))
            for k in per_seed[0][bench]
            if k not in PER_BUNDLE
        }
        for bench in BENCHMARKS
    }


HEAD_LABELS = {
    "knn": "k-NN",
    "classifier": "classifier 1 - softmax",
    "rec-kld": "VAE L_rec + L_kld",
    "rec-kld-center": "VAE L_rec + L_kld + 150 L_C",
    "rec-kld+rec-kld-center": "VAE ensemble of both",
}


def bundle_rows(label: str, paths: list[str], data: Path) -> list[dict]:
    """One row per score head the bundles carry (k-NN, classifier, VAE heads, the declared default)."""
    m = Bundle.load(paths[0]).manifest
    heads = list(m.all_heads())
    if m.score.head not in heads:
        heads.append(m.score.head)
    rows = []
    for head in heads:
        per_seed = [score_bundle(p, data, head) for p in paths]
        name = f"{label}, {HEAD_LABELS.get(head, head)}"
        if len(paths) == 1:
            rows.append({"system": name, "scores": per_seed[0]})  # one bundle (it may be an ensemble)
        else:
            rows.append(
                {
                    "system": f"{name} ({len(paths)} seeds, mean ± std)",
                    "scores": aggregate(per_seed),
                    "per_seed": per_seed,
                }
            )
        print(rows[-1], flush=True)
    return rows


def train_seed(recipe: str, seed: int, work: Path, data: Path, epochs: int, recipe_config: dict) -> Path:
    from export.build_default import EXCLUDE
    from export.onnx_export import export_bundle
    from export.train import TrainArgs, train

    ck = work / f"seed{seed}.ckpt"
    if not ck.is_file():
        train(
            TrainArgs(
                data=[str(data)],
                out=str(ck),
                recipe=recipe,
                epochs=epochs,
                seed=seed,
                recipe_config=recipe_config,
                exclude_test_of=EXCLUDE,
            )
        )
    bundle = work / f"bundle-seed{seed}"
    if not (bundle / "manifest.json").is_file():
        export_bundle(ck, bundle, name=f"{recipe}-seed{seed}", log=lambda *_: None)
    return bundle


def build_rows(a) -> list[dict]:
    """The references, the dualbranch seeds and the default model."""
    from export.build_default import RECIPE
    from export.reference import build_reference

    rows: list[dict] = []
    a.work.mkdir(parents=True, exist_ok=True)
    for ref in ("logmel-stats", "spectrum"):
        d = build_reference(ref, a.work / f"reference-{ref}")
        rows.append({"system": f"training-free {ref} k-NN (this code)", "scores": score_bundle(d, a.data)})
        print(rows[-1], flush=True)
    per_seed = []
    for seed in a.seeds:
        per_seed.append(score_bundle(train_seed("dualbranch", seed, a.work, a.data, a.epochs, RECIPE), a.data))
        print({"seed": seed, **per_seed[-1]}, flush=True)
    rows.append(
        {
            "system": f"dualbranch, 2 s windows, single model ({len(a.seeds)} seeds, mean ± std)",
            "scores": aggregate(per_seed),
            "per_seed": per_seed,
        }
    )
    rows.append({"system": DEFAULT_ROW, "scores": score_bundle("default", a.data)})
    rows.append({"system": FAST_ROW, "scores": score_bundle("fast", a.data)})
    rows += head_rows(a.data)
    print(rows[-4:], flush=True)
    return rows


def head_rows(data: Path) -> list[dict]:
    return [{"system": label, "scores": score_bundle("default", data, head)} for label, head in HEAD_ROWS.items()]


def fmt(mean: float, std: float | None = None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def by_attribute_table(rows: list[dict]) -> str:
    """Valve per operating pattern, for the rows scored as one bundle (seed rows keep only means)."""
    rows = [r for r in rows if "by_attribute" in r["scores"]["valve"]]
    if not rows:
        return ""
    values = list(rows[0]["scores"]["valve"]["by_attribute"])
    lines = [
        "",
        "",
        "Valve within one operating pattern (AUC of a pattern's normal clips against its own anomalous "
        "clips, 95 % bootstrap interval; source patterns 00/01, target 02/03):",
        "",
        "| system | " + " | ".join(values) + " |",
        "|---|" + "---|" * len(values),
    ]
    for r in rows:
        by = r["scores"]["valve"]["by_attribute"]
        cells = [f"{by[v][0]:.1f} [{by[v][1]:.1f}, {by[v][2]:.1f}]" if v in by else "" for v in values]
        lines.append(f"| {r['system']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument(
        "--work", type=Path, default=ROOT / "runs" / "default", help="seed checkpoints (reused when present)"
    )
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "model.md")
    p.add_argument(
        "--bundle",
        action="append",
        default=[],
        metavar="LABEL=PATH[,PATH...]",
        help="also score this bundle with every score head it carries; several paths (seeds of one recipe) give "
        "mean ± std, e.g. 'stgram=runs/recipes/stgram-seed0,runs/recipes/stgram-seed1,runs/recipes/stgram-seed2'",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="score only the --bundle rows; keep the other rows of the JSON (--json) as they are",
    )
    p.add_argument(
        "--rescore-default",
        action="store_true",
        help="with --update: score the built-in models' rows (default, fast, and the default with the indicators "
        "heads) again too",
    )
    a = p.parse_args(argv)
    if len(a.seeds) < 3:
        p.error("use at least 3 seeds")
    extra = []
    for spec in a.bundle:
        label, _, paths = spec.partition("=")
        extra += bundle_rows(label, [x for x in paths.split(",") if x], a.data)
    if a.update:
        old = json.loads(a.json.read_text())["rows"] if a.json.is_file() else []
        labels = {spec.partition("=")[0] for spec in a.bundle}
        rows = [r for r in old if not any(r["system"].startswith(f"{lab}, ") for lab in labels)] + extra
        if a.rescore_default:  # the built-in models' rows: the default (ensemble) and the fast model after it
            rows = [r for r in rows if r["system"] != FAST_ROW and r["system"] not in HEAD_ROWS]
            at = next((i + 1 for i, r in enumerate(rows) if r["system"] == DEFAULT_ROW), len(rows))
            rows[at:at] = [{"system": FAST_ROW, "scores": score_bundle("fast", a.data)}, *head_rows(a.data)]
            for r in rows:
                if r["system"] == DEFAULT_ROW:
                    r["scores"] = score_bundle("default", a.data)
        for r in rows:  # JSON turned the (mean, std) tuples into lists
            for bench in r["scores"].values():
                for k, v in bench.items():
                    if isinstance(v, list) and k not in PER_BUNDLE:
                        bench[k] = tuple(v)
    else:
        rows = build_rows(a) + extra
    lines = [
        "| system | valve AUC source | valve AUC target | valve pAUC | **valve h-mean** | fan AUC | fan pAUC | **fan "
        "h-mean** |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v, f = r["scores"]["valve"], r["scores"]["fan"]

        def cell(d, k):
            text = fmt(*d[k]) if isinstance(d[k], tuple) else fmt(d[k])
            if k == "hmean" and "hmean_ci" in d:
                text += f" [{d['hmean_ci'][0]:.1f}, {d['hmean_ci'][1]:.1f}]"
            return text

        lines.append(
            f"| {r['system']} | {cell(v, 'auc_source')} | {cell(v, 'auc_target')} | {cell(v, 'pauc')} | "
            f"**{cell(v, 'hmean')}** | "
            f"{cell(f, 'auc')} | {cell(f, 'pauc')} | **{cell(f, 'hmean')}** |"
        )
    for name, s in PUBLISHED.items():
        lines.append(f"| {name} | | | | {s['valve']:.2f} | | | {s['fan']:.2f} |")
    when = _dt.date.today().isoformat()
    table = "\n".join(lines) + by_attribute_table(rows)
    header = (
        f"Measured {when} on {platform.machine()} with {platform.python_version()}, `python benchmarks/quality.py` "
        f"(scores in %, hop 1 s, 16 source k-means centres + all target windows, 90th-percentile threshold; "
        f"[lo, hi]: 95 % bootstrap interval of the h-mean, clips resampled within each class and domain)."
    )
    print(header + "\n" + table)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"date": when, "rows": rows, "published": PUBLISHED}, indent=2) + "\n")
    if a.doc.is_file():
        text = a.doc.read_text()
        if MARK_BEGIN in text and MARK_END in text:
            pre, rest = text.split(MARK_BEGIN, 1)
            post = rest.split(MARK_END, 1)[1]
            a.doc.write_text(f"{pre}{MARK_BEGIN}\n{header}\n\n{table}\n{MARK_END}{post}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
