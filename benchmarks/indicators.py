"""Classic condition indicators on the development sets: how well the overall level, the crest
factor and the kurtosis of the sound, the oldest checks of machine condition monitoring, tell
normal from anomalous clips, next to the embedding models of benchmarks/quality.py.

Unsupervised like every score here: each window's indicators are standardised with the mean and
spread of the enrolment windows (a floor per indicator, so that a set whose clips were normalised
to one level does not turn a tenth of a dB into an anomaly), and its score is the distance to the
nearest enrolment window in either direction. A clip's score is the mean of its windows' scores,
as in `edge-agent evaluate`. Windows of 2 s (the default model's) and 10 s (a whole clip) at hop
1 s show what the length of the stretch the indicators are measured over costs.

    python benchmarks/indicators.py     # table, benchmarks/results/indicators.json

The product's ``indicators`` score head (edge_agent/model/indicators.py, ``calibrate --score indicators``)
computes the same three over the model's window; this benchmark also measures them over 10 s and
one by one (docs/model.md).
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

from calibration.dataset import parse_path  # noqa: E402
from calibration.evaluate import ClipEmbedder  # noqa: E402
from calibration.metrics import auc_by_attribute, bootstrap_hmean, section_scores  # noqa: E402
from edge_agent.audio.wavio import read_wav  # noqa: E402
from edge_agent.audio.windows import frame_windows  # noqa: E402
from edge_agent.engine import OnnxEngine  # noqa: E402
from edge_agent.model.bundle import Bundle  # noqa: E402
from edge_agent.model.indicators import FLOORS, window_indicators  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
INDICATORS = ("level", "crest factor", "kurtosis")
FLOOR = FLOORS  # dB, dB, log kurtosis: differences below these are not anomalies
VARIANTS = {"level": [0], "crest factor": [1], "kurtosis": [2], "all three": [0, 1, 2]}
HORIZONS = (2, 10)


def indicators(x: np.ndarray, seconds: int, sample_rate: int = 16000) -> np.ndarray:
    """Per window of ``seconds`` at hop 1 s: RMS level (dBFS), crest factor (peak over RMS, dB) and
    the log of the kurtosis, as the product's ``indicators`` head computes them."""
    return window_indicators(frame_windows(x, seconds * sample_rate, sample_rate)).astype(np.float64)


def clip_scores(enrol: list[np.ndarray], test: list[np.ndarray], cols: list[int]) -> np.ndarray:
    bank = np.concatenate(enrol)[:, cols]
    mu, sd = bank.mean(0), np.maximum(bank.std(0), FLOOR[cols])
    b = (bank - mu) / sd
    out = []
    for f in test:
        z = (f[:, cols] - mu) / sd
        out.append(np.sqrt(((z[:, None, :] - b[None]) ** 2).sum(-1)).min(1).mean())
    return np.array(out)


def model_scores(embed: ClipEmbedder, enrol: list[Path], test: list[Path]) -> np.ndarray:
    """The same split through a model: cosine distance of each window to the nearest enrolment
    window (every window in the bank, no k-means, on every set alike), mean over the clip."""
    bank = np.concatenate([embed(p) for p in enrol])
    return np.array([(1.0 - embed(p) @ bank.T).min(1).mean() for p in test])


def _mono(p: Path) -> np.ndarray:
    x, sr = read_wav(p)
    if sr != 16000:
        raise SystemExit(f"{p}: {sr} Hz; these sets are 16 kHz")
    return x if x.ndim == 1 else x[:, 0]


def sets(data: Path) -> dict[str, tuple[list[Path], list[Path]]]:
    """(enrolment clips, test clips) per set. The DCASE 2020 folders have test clips only: the
    even-numbered normals of each machine type enrol, the other normals and every anomaly are tested
    (machine ids mixed, as one stream of that type would be)."""
    out = {
        "valve (DCASE 2023)": (
            sorted((data / "dcase2023t2/valve/train").glob("*.wav")),
            sorted((data / "dcase2023t2/valve/test").glob("*.wav")),
        ),
        "fan (MIMII id_00)": (
            sorted((data / "mimii/fan/train").glob("*.wav")),
            sorted((data / "mimii/fan/test").glob("*.wav")),
        ),
    }
    for t in ("ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve"):
        clips = sorted((data / "dcase2020t2" / t / "test").glob("*.wav"))
        normal = [p for p in clips if p.name.startswith("normal")]
        out[f"{t} (DCASE 2020, ids mixed)"] = (
            normal[::2],
            normal[1::2] + [p for p in clips if p.name.startswith("anomaly")],
        )
    return out


def label(p: Path) -> tuple[int, str, str]:
    """(anomalous, domain, operating condition) from the file name, as `edge-agent evaluate` reads it."""
    c = parse_path(p)
    return int(c.condition == "anomaly"), c.domain, ",".join(f"{k}={v}" for k, v in c.attributes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default ../shared/data)")
    ap.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "indicators.json",
        help="where to write the results",
    )
    ap.add_argument("--model", default="default", help="bundle to compare with (default: the built-in default model)")
    a = ap.parse_args()
    bundle = Bundle.load(a.model)
    embed = ClipEmbedder(OnnxEngine(bundle, "cpu"), bundle.frontend, 1.0)
    rows = []
    for name, (enrol, test) in sets(a.data).items():
        y, dom, attr = map(np.array, zip(*(label(p) for p in test)))
        audio = {p: _mono(p) for p in enrol + test}
        runs = [(f"model {bundle.name}", bundle.frontend.window_seconds, model_scores(embed, enrol, test))]
        for h in HORIZONS:
            fe = [indicators(audio[p], h) for p in enrol]
            ft = [indicators(audio[p], h) for p in test]
            runs += [(var, h, clip_scores(fe, ft, cols)) for var, cols in VARIANTS.items()]
        for var, h, s in runs:
            sec = section_scores(y, s, dom)
            lo, hi = bootstrap_hmean(y, s, dom)
            row = {
                "set": name,
                "window_seconds": h,
                "scored_by": var,
                "enrolment_clips": len(enrol),
                "normal": int((y == 0).sum()),
                "anomalous": int(y.sum()),
                **{k: 100 * v for k, v in sec.items() if k.startswith(("auc", "pauc", "hmean"))},
                "hmean_ci": [100 * lo, 100 * hi],
            }
            if any(attr):
                row["by_attribute"] = {k: [100 * v for v in t] for k, t in auc_by_attribute(y, s, attr).items()}
            rows.append(row)
    print(f"{'set':34s} {'window':>6s} {'scored by':13s} {'h-mean [95 %]':>22s}  per operating pattern")
    for r in rows:
        pats = " ".join(f"{k} {v[0]:.0f}" for k, v in r.get("by_attribute", {}).items())
        ci = f"{r['hmean']:.1f} [{r['hmean_ci'][0]:.1f}, {r['hmean_ci'][1]:.1f}]"
        print(f"{r['set']:34s} {r['window_seconds']:>5g}s {r['scored_by']:13s} {ci:>22s}  {pats}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(
        json.dumps(
            {
                "measured": _dt.date.today().isoformat(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "floor": dict(zip(INDICATORS, FLOOR.tolist())),
                "model": bundle.describe(),
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
