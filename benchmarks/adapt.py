"""Field adaptation benchmark: what fine-tuning a copy of the model on one machine's normal clips
(``calibrate --adapt``, ``export/adapt.py``) does, against the generic model it came from.

``quality``: for each bundle and development machine (DCASE 2023 valve, MIMII fan: the two with
enough normal clips), the generic model and its adapted copy, each on the same clips:
- clip level as ``edge-agent evaluate`` (bank from train/, test clips scored): h-mean with its 95 %
  bootstrap interval, and the paired interval of the difference;
- streams as ``benchmarks/stream.py`` (each unseen clip its own recording, no splices; default
  alarm rule and budget): false alarms per hour, recall, delay, the predicted rate;
- the label-free check's verdict (would ``calibrate --adapt`` keep it?), the time it took.
Run it on bundles that never heard the machine (``edge-agent train --exclude ...``) to measure what
a new machine gets; on the built-in models, which heard these train clips, it shows adaptation on
clips the model already knows.

``cost``: time and peak memory of one adaptation (a process each) on 5, 30 and 60 minutes of audio.

    python benchmarks/adapt.py quality --bundle 'never heard=runs/generic' --corpus runs/corpus
    python benchmarks/adapt.py cost --bundle default --bundle fast --minutes 5 30 60
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.network import write_results  # noqa: E402
from benchmarks.stream import HIGH_BUDGET_PER_DAY, enrol_and_replay, evaluate_setting, machines, policy_for  # noqa: E402
from calibration.adapt_audio import Piece, corpus_pieces, pieces_from_paths  # noqa: E402
from calibration.evaluate import ClipEmbedder, evaluate_machine  # noqa: E402
from calibration.metrics import bootstrap_hmean, bootstrap_hmean_difference  # noqa: E402
from edge_agent.config import AlarmConfig  # noqa: E402
from edge_agent.engine import OnnxEngine  # noqa: E402
from edge_agent.model.bundle import Bundle  # noqa: E402
from export.adapt import AdaptSettings, adapt_machine  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DIRS = {"valve": "dcase2023t2/valve", "fan": "mimii/fan"}
VARIANTS = {
    "full": {},
    "no corpus": {"corpus": ()},
    "pseudo-attributes only": {"corpus": (), "augment": False},
}


def clip_level(bundle: Bundle, engine, machine_dir: Path):
    r = evaluate_machine(machine_dir, ClipEmbedder(engine, bundle.frontend, 1.0), bundle)
    y = [c.condition == "anomaly" for c in r.clips]
    d = [c.domain for c in r.clips]
    lo, hi = bootstrap_hmean(y, r.scores, d)
    sec = next(iter(r.sections.values()))
    return {
        "hmean": 100 * r.hmean,
        "hmean_ci": [100 * lo, 100 * hi],
        **{k: 100 * v for k, v in sec.items() if k.startswith(("auc", "pauc"))},
    }, r


def stream_level(bundle: Bundle, engine, sets: dict) -> dict:
    """The default budget (1 false alarm a week) and one high enough to count alarms (20 an hour)."""
    alarm = AlarmConfig()
    res, normal, anom = enrol_and_replay(bundle, engine, sets["enrol"], sets["normal"], sets["anomaly"])
    out = {}
    for name, setting in (("default", {}), ("countable", {"false_alarms_per_day": float(HIGH_BUDGET_PER_DAY)})):
        r = evaluate_setting(
            res, normal, anom, policy_for(setting, alarm), alarm.model_dump(), bundle.frontend.window_seconds
        )
        out[name] = {k: r[k] for k in ("threshold", "predicted_per_hour", "false_alarms", "detection")}
    return out


def quality(a) -> dict:
    sets = machines(a.data)
    corpus_dirs = tuple(str(c) for c in a.corpus)
    out = {"corpus": list(corpus_dirs), "steps": a.steps, "rows": []}
    for label, path in (b.split("=", 1) for b in a.bundle):
        bundle = Bundle.load(path)
        engine = OnnxEngine(bundle, "cpu")
        fe = bundle.frontend
        corpus = tuple(corpus_pieces(corpus_dirs, fe.sample_rate, fe.window_seconds)) if corpus_dirs else ()
        for m in a.machines:
            mdir = a.data / DIRS[m]
            gen, gr = clip_level(bundle, engine, mdir)
            row = {
                "bundle": label,
                "machine": m,
                "generic": {"clips": gen, "stream": stream_level(bundle, engine, sets[m])},
            }
            print(f"{label} {m} generic: h-mean {gen['hmean']:.2f} {gen['hmean_ci']}", flush=True)
            pieces, _ = pieces_from_paths([mdir / "train"], fe.sample_rate, fe.window_seconds)
            for v in a.variants:
                s = replace(AdaptSettings(steps=a.steps, corpus=corpus_dirs), **VARIANTS[v])
                with tempfile.TemporaryDirectory() as tmp:
                    t = time.time()
                    o = adapt_machine(
                        engine,
                        pieces,
                        m,
                        Path(tmp) / "model",
                        s,
                        corpus if s.corpus else (),
                        progress=False,
                        keep_anyway=True,
                    )
                    own = Bundle.load(o.bundle_dir)
                    oe = OnnxEngine(own, "cpu")
                    ad, ar = clip_level(own, oe, mdir)
                    y = [c.condition == "anomaly" for c in gr.clips]
                    lo, hi = bootstrap_hmean_difference(y, gr.scores, ar.scores, [c.domain for c in gr.clips])
                    row[v] = {
                        "clips": ad,
                        "difference_ci": [100 * lo, 100 * hi],
                        "stream": stream_level(own, oe, sets[m]),
                        "check": o.check,
                        "kept_by_check": o.kept,
                        "seconds": round(time.time() - t, 1),
                        "train_seconds": o.info["train_seconds"],
                    }
                print(
                    f"{label} {m} {v}: h-mean {ad['hmean']:.2f} {ad['hmean_ci']} diff [{100 * lo:+.2f}, "
                    f"{100 * hi:+.2f}] check kept={o.kept} ({o.check['adapted']['auc']:.3f} vs "
                    f"{o.check['generic']['auc']:.3f})",
                    flush=True,
                )
            out["rows"].append(row)
    return out


def _cell(st: dict) -> str:
    fa, det = st["false_alarms"], st["detection"]
    return (
        f"{fa['alarms']} in {60 * fa['hours']:.1f} min ({fa['per_hour']:.1f}/h, predicted "
        f"{st['predicted_per_hour']:.2g}/h) | {det['detected']}/{det['clips']} "
        f"[{det['recall_ci'][0]:.2f}, {det['recall_ci'][1]:.2f}]"
    )


def _streams(st: dict) -> str:
    """The cells of both budgets (false alarms | recall each); older results hold the default alone."""
    return " | ".join(_cell(st[k]) for k in ("default", "countable")) if "default" in st else _cell(st) + " | |"


def quality_table(res: dict) -> str:
    lines = [
        "| model | machine | system | clip h-mean [95 %] | difference [95 %] | false alarms, 1 a week | recall | "
        f"false alarms, {HIGH_BUDGET_PER_DAY // 24} an hour | recall | check: AUC adapted / generic, kept |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in res["rows"]:
        g = row["generic"]
        gc = g["clips"]
        lines.append(
            f"| {row['bundle']} | {row['machine']} | generic | {gc['hmean']:.2f} [{gc['hmean_ci'][0]:.1f}, "
            f"{gc['hmean_ci'][1]:.1f}] | | {_streams(g['stream'])} | |"
        )
        for v in VARIANTS:
            if v not in row:
                continue
            r, c = row[v], row[v]["clips"]
            ch = r["check"]
            lines.append(
                f"| | | adapted ({v}) | {c['hmean']:.2f} [{c['hmean_ci'][0]:.1f}, {c['hmean_ci'][1]:.1f}] | "
                f"{c['hmean'] - gc['hmean']:+.2f} [{r['difference_ci'][0]:+.1f}, {r['difference_ci'][1]:+.1f}] | "
                f"{_streams(r['stream'])} | {ch['adapted']['auc']:.3f} / {ch['generic']['auc']:.3f}, "
                f"{'kept' if r['kept_by_check'] else 'not kept'} |"
            )
    return "\n".join(lines)


def cost_one(bundle_path: str, minutes: float, steps: int) -> dict:
    """One adaptation on ``minutes`` of audio (the slider's normal clips, repeated with a small gain
    change each round so no two pieces are the same), in this process: time and peak memory."""
    import resource

    bundle = Bundle.load(bundle_path)
    engine = OnnxEngine(bundle, "cpu")
    fe = bundle.frontend
    base, _ = pieces_from_paths([DATA / "dcase2020t2" / "slider" / "train"], fe.sample_rate, fe.window_seconds)
    pieces, total, k = [], 0.0, 0
    while total < minutes * 60:
        p = base[k % len(base)]
        gain = 1.0 - 0.02 * (k // len(base))
        pieces.append(Piece(p.audio * gain, f"{p.group}#{k}", p.domain))
        total += len(p.audio) / fe.sample_rate
        k += 1
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        o = adapt_machine(
            engine,
            pieces,
            "slider",
            Path(tmp) / "m",
            AdaptSettings(steps=steps, max_minutes=60.0),
            progress=False,
            keep_anyway=True,
        )
    return {
        "bundle": bundle.name,
        "minutes": minutes,
        "audio_minutes_used": round((o.info["audio"]["seconds_learnt"] + o.info["audio"]["seconds_held_out"]) / 60, 1),
        "steps": steps,
        "seconds": o.info["seconds"],
        "train_seconds": o.info["train_seconds"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(rss0, 1),
    }


def cost(a) -> dict:
    rows = []
    for b in a.bundle:
        path = b.split("=", 1)[-1]
        for m in a.minutes:
            p = subprocess.run(
                [sys.executable, __file__, "cost-one", path, str(m), str(a.steps)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return {"steps": a.steps, "rows": rows}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "cost-one":
        print(json.dumps(cost_one(argv[1], float(argv[2]), int(argv[3]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["quality", "cost"])
    p.add_argument("--bundle", action="append", required=True, metavar="LABEL=PATH", help="bundles (repeatable)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--machines", nargs="+", default=list(DIRS), choices=list(DIRS))
    p.add_argument("--variants", nargs="+", default=["full"], choices=list(VARIANTS))
    p.add_argument("--corpus", nargs="*", type=Path, default=[], help="other machines' clips (outlier exposure)")
    p.add_argument("--steps", type=int, default=AdaptSettings.steps)
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 30, 60])
    p.add_argument("--out", type=Path, default=None, help="JSON to write (default benchmarks/results/adapt-WHAT.json)")
    a = p.parse_args(argv)
    if a.what == "quality":
        res = quality(a)
        print(quality_table(res))
    else:
        res = cost(a)
        print("| model | audio (min) | steps | time (s) | of it training (s) | peak memory (MB) |")
        print("|---|---|---|---|---|---|")
        for r in res["rows"]:
            print(
                f"| {r['bundle']} | {r['minutes']:g} | {r['steps']} | {r['seconds']:.0f} | {r['train_seconds']:.0f} | "
                f"{r['peak_rss_mb']:.0f} |"
            )
    write_results(a.out or ROOT / "benchmarks" / "results" / f"adapt-{a.what}.json", **res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
