"""Streaming benchmark: what an engineer on the plant floor lives with. For each development machine
with enough audio, enrol as `calibrate` does, then replay through the production agent (ring buffer,
windows, front end, ONNX Runtime, k-NN, detector; WAV replay as fast as possible):

- the unseen normal clips, each its own recording (a folder replay: no window spans two files, and
  the detector starts afresh in each): false alarms per hour with an exact 95 % Poisson interval
  (zero alarms in T hours only bounds the rate below about 3.7 / T per hour);
- every anomalous clip as its own recording: recall (an alarm while it plays, 95 % Wilson interval)
  and delay from the start of the recording (median, bootstrap interval). The detector's warm-up
  counts in it: at hop 1 s no window counts until the running median is full, so on a 10 s clip
  an alarm can start at the 7th window at the earliest (8 s into the clip), and 3 of its last 5
  windows must be above the threshold;
- the false-alarm rate calibration predicted, next to the measured one, also at a budget high enough
  to count alarms;
- the same for the other score heads worth comparing (``HEADS_COMPARED``: the model-free
  ``indicators`` alone and with the k-NN), each enrolled and replayed again.

Window scores do not depend on the threshold, so the agent scores each stream once (default
setting) and every row's threshold is fitted by calibration's own ``pick_threshold`` on the
enrolment's leave-one-clip-out scores; the recorded scores then go through the agent's own
``Detector``. The default setting's alarms are checked to be identical both ways.

    python benchmarks/stream.py                 # table, benchmarks/results/stream.json, docs/performance.md section
    python benchmarks/stream.py --machines fan  # one machine
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.policy import ThresholdPolicy  # noqa: E402
from calibration.service import enrol_paths  # noqa: E402
from edge_agent.audio.fingerprint import audio_fingerprint  # noqa: E402
from edge_agent.audio.wavio import read_wav, wav_info  # noqa: E402
from edge_agent.config import AlarmConfig, parse_config  # noqa: E402
from edge_agent.engine import OnnxEngine  # noqa: E402
from edge_agent.model.bundle import Bundle  # noqa: E402
from edge_agent.runtime.daemon import agent_from_config  # noqa: E402
from edge_agent.runtime.sink import Sink, WindowEvent  # noqa: E402
from edge_agent.scoring.bank import MemoryBank, bank_path  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MARK_BEGIN, MARK_END = "<!-- stream-table:begin -->", "<!-- stream-table:end -->"
HIGH_BUDGET_PER_DAY = 24 * 20  # 20 an hour: enough to count alarms on minutes of audio


def _slider_no(p: Path) -> int:
    return int(p.stem.rsplit("_", 1)[1])


def machines(data: Path) -> dict[str, dict[str, list[Path]]]:
    valve = data / "dcase2023t2" / "valve"
    slider = sorted((data / "dcase2020t2" / "slider" / "train").glob("*.wav"))
    fan = data / "mimii" / "fan"
    return {
        "valve": {
            "enrol": sorted((valve / "train").glob("*.wav")),
            "normal": sorted((valve / "test").glob("*_normal_*.wav")),
            "anomaly": sorted((valve / "test").glob("*_anomaly_*.wav")),
        },
        # slider id_00: the 75 normal training clips split by number, 0-39 enrolled, 40-74 unseen
        "slider": {
            "enrol": [p for p in slider if _slider_no(p) < 40],
            "normal": [p for p in slider if _slider_no(p) >= 40],
            "anomaly": sorted((data / "dcase2020t2" / "slider" / "test").glob("anomaly_id_00_*.wav")),
        },
        "fan": {
            "enrol": sorted((fan / "train").glob("*.wav")),
            "normal": sorted((fan / "test").glob("normal_*.wav")),
            "anomaly": sorted((fan / "test").glob("anomaly_*.wav")),
        },
    }


# -- statistics ------------------------------------------------------------------------------
def poisson_rate(k: int, hours: float) -> tuple[float, float, float]:
    """Rate per hour with its exact (Garwood) 95 % interval."""
    lo = stats.chi2.ppf(0.025, 2 * k) / 2 if k else 0.0
    hi = stats.chi2.ppf(0.975, 2 * k + 2) / 2
    return k / hours, lo / hours, hi / hours


def wilson(k: int, n: int) -> tuple[float, float, float]:
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def median_ci(x: list[float], seed: int = 0) -> tuple[float, float, float]:
    if not x:
        return float("nan"), float("nan"), float("nan")
    a = np.asarray(x)
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(a, (2000, len(a)), replace=True), axis=1)
    return float(np.median(a)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


# -- one stream through the agent --------------------------------------------------------------
@dataclass
class StreamRun:
    offsets: np.ndarray  # stream seconds at each window's end
    scores: np.ndarray
    recordings: np.ndarray  # the recording (file) of each window, as its index in ``spans``
    alarms: list[tuple[float, float]]  # (start, end) in stream seconds
    spans: list[tuple[float, float, Path]]  # where each file lies in the stream
    extra: dict = field(default_factory=dict)


class _Recorder(Sink):
    def __init__(self):
        self.offset, self.alarms, self._open = 0.0, [], None
        self.offsets, self.scores, self.recordings = [], [], []

    def window(self, w: WindowEvent):
        decision = w.decision
        self.offset = w.offset
        self.offsets.append(w.offset)
        self.scores.append(w.score)
        self.recordings.append(int(w.recording.split("_", 1)[0]))
        if decision is not None and decision.kind == "start":
            self._open = w.offset
        elif decision is not None and decision.kind == "end":
            self.alarms.append((self._open, w.offset))
            self._open = None

    def handle(self, kind, machine, p):
        # alarms still open when a recording ends are closed outside a window
        if kind == "alarm" and p["event"] == "end" and p["reason"].startswith("end of recording") and self._open:
            self.alarms.append((self._open, self.offset))
            self._open = None

    def close(self):
        pass


def replay_setup(d: Path, bank: MemoryBank, files: list[Path], alarm: dict):
    """State dir ``d`` with machine "m" (``bank``) replaying ``files`` in order as fast as they can
    be scored, each its own recording: (config, where each file lies in the stream)."""
    bank.save(bank_path(d, "m"))
    (d / "replay").mkdir()
    spans, t = [], 0.0
    for i, f in enumerate(files):
        (d / "replay" / f"{i:05d}_{f.name}").symlink_to(f.resolve())
        sec = wav_info(f).seconds
        spans.append((t, t + sec, f))
        t += sec
    cfg = parse_config(
        {
            "state_dir": str(d),
            "engine": "cpu",
            "status_interval_seconds": 1e9,
            "machines": {"m": {"input": {"file": str(d / "replay"), "realtime": False}, "alarm": alarm}},
        }
    )
    return cfg, spans


def replay(bundle: Bundle, engine, bank: MemoryBank, files: list[Path], alarm: dict) -> StreamRun:
    with tempfile.TemporaryDirectory(prefix="stream-") as d:
        cfg, spans = replay_setup(Path(d), bank, files, alarm)
        rec = _Recorder()
        agent_from_config(cfg, [rec], bundle=bundle, engine=engine).run()
    return StreamRun(np.array(rec.offsets), np.array(rec.scores), np.array(rec.recordings), rec.alarms, spans)


def offline_alarms(run: StreamRun, threshold: float, alarm: dict, hop: float) -> list[tuple[float, float]]:
    """The same decisions from recorded window scores, through the agent's own Detector, which starts
    afresh in each recording (an alarm open at its end ends there)."""
    from edge_agent.scoring.detector import Detector

    a = AlarmConfig(**alarm)
    det = Detector(
        threshold, a.raise_after, a.of_last, a.clear_after, a.update_seconds, a.smooth_windows(hop), a.smooth
    )
    out, start, last = [], None, None
    for i, (off, s) in enumerate(zip(run.offsets, run.scores)):
        if i and run.recordings[i] != run.recordings[i - 1]:  # as the agent does at a join
            if det.end(last, float(run.scores[i - 1]), "end of recording") is not None:
                out.append((start, last))
                start = None
            det.reset()
        last = float(off)
        d = det.update(float(s), float(off))
        if d is not None and d.kind == "start":
            start = float(off)
        elif d is not None and d.kind == "end":
            out.append((start, float(off)))
            start = None
    if start is not None:
        out.append((start, float(run.offsets[-1])))
    return out


def false_alarms(normal: StreamRun, alarms) -> dict:
    """Alarms on the normal stream, and the share of its time an alarm was open: a threshold low
    enough to keep one alarm open for most of the stream raises few alarms, and the count alone
    would read as a good result."""
    seconds = normal.spans[-1][1]
    rate, lo, hi = poisson_rate(len(alarms), seconds / 3600)
    share = sum(b - a for a, b in alarms) / seconds if seconds else 0.0
    return {
        "alarms": len(alarms),
        "hours": seconds / 3600,
        "per_hour": rate,
        "per_hour_ci": [lo, hi],
        "in_alarm_share": share,
    }


def detection(anom: StreamRun, alarms, window_seconds: float) -> dict:
    """Recall and delay over the anomalous recordings: an alarm that starts within one, its delay
    from the recording's start (no alarm spans two recordings)."""
    hits, delays, n = 0, [], 0
    for t0, t1, f in anom.spans:
        if "anomaly" not in f.name:
            continue
        n += 1
        starts = [a for a, b in alarms if t0 < a <= t1 + 1e-6]
        if starts:
            hits += 1
            delays.append(max(0.0, min(starts) - t0))
    r, lo, hi = wilson(hits, n)
    med, dlo, dhi = median_ci(delays)
    return {
        "clips": n,
        "detected": hits,
        "recall": r,
        "recall_ci": [lo, hi],
        "delay_median_s": med,
        "delay_ci_s": [dlo, dhi],
    }


def oracle(normal: StreamRun, anom: StreamRun, alarm: dict, window_seconds: float, hop: float = 1.0) -> dict:
    """The best any threshold can do: the lowest one at which the unseen normal stream raises no
    alarm, found by looking at that stream (so no calibration could pick it), and the recall it
    leaves. "No alarm" only gets truer as the threshold rises (the rule counts windows above it), so
    a bisection over the recorded scores finds it; the median's outputs are among those scores."""
    cand = np.unique(normal.scores)
    lo, hi = 0, len(cand) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if offline_alarms(normal, float(cand[mid]), alarm, hop):
            lo = mid + 1
        else:
            hi = mid
    thr = float(cand[lo])
    assert not offline_alarms(normal, thr, alarm, hop), "the highest normal score must leave no alarm"
    return {"threshold": thr, "detection": detection(anom, offline_alarms(anom, thr, alarm, hop), window_seconds)}


# -- the benchmark ---------------------------------------------------------------------------
# label -> (threshold policy, alarm settings). The first two rows are the former behaviour
# (no smoothing; windows taken as independent for the budget), for comparison.
SETTINGS = {
    "before: percentile 0.90": ({"percentile": 0.90, "independent_windows": True}, {"smooth_seconds": 0}),
    "before: --false-alarms-per-day 1": (
        {"false_alarms_per_day": 1.0, "independent_windows": True},
        {"smooth_seconds": 0},
    ),
    "default (1 a week)": ({}, {}),
    "--false-alarms-per-day 1": ({"false_alarms_per_day": 1.0}, {}),
    f"--false-alarms-per-day {HIGH_BUDGET_PER_DAY} (countable)": (
        {"false_alarms_per_day": float(HIGH_BUDGET_PER_DAY)},
        {},
    ),
}


# Score heads compared with the bundle's own (k-NN) at these settings (calibrate --score HEAD)
HEADS_COMPARED = ("indicators", "knn+indicators")
HEAD_SETTINGS = (
    "default (1 a week)",
    "--false-alarms-per-day 1",
    f"--false-alarms-per-day {HIGH_BUDGET_PER_DAY} (countable)",
)


def policy_for(setting: dict, alarm: AlarmConfig) -> ThresholdPolicy:
    from dataclasses import replace

    from calibration.policy import threshold_policy

    p = threshold_policy(setting.get("percentile"), setting.get("false_alarms_per_day"), 1.0, alarm)
    return replace(p, independent_windows=setting.get("independent_windows", False))


SWEEP_SECONDS = (0.0, 2.0, 4.0, 8.0)  # smoothing horizons tried at the default budget


def evaluate_setting(
    res, normal: StreamRun, anom: StreamRun, policy: ThresholdPolicy, alarm: dict, window_seconds: float
) -> dict:
    """Threshold from the enrolment's leave-one-out scores under ``policy``, then the recorded streams
    through the agent's Detector at that threshold."""
    from calibration.enrol import pick_threshold

    scores, groups = res.fit_scores()
    _, thr, rule, per_day, info = pick_threshold(scores, policy, groups)
    fa = false_alarms(normal, offline_alarms(normal, thr, alarm, policy.hop_seconds))
    det = detection(anom, offline_alarms(anom, thr, alarm, policy.hop_seconds), window_seconds)
    return {
        "threshold": thr,
        "rule": {**rule, **policy.rule()},
        "alarm": alarm,
        "predicted_per_hour": per_day / 24,
        "predicted_ci_per_hour": [x / 24 for x in info.get("per_day_ci", [])],
        "rate_method": info.get("method"),
        "false_alarms": fa,
        "detection": det,
    }


def enrol_and_replay(
    bundle: Bundle, engine, enrol: list[Path], normal: list[Path], anomaly_stream: list[Path], score=None
):
    """Enrol as calibrate does (default setting, ``score`` head), then the unseen normal stream and
    the lead-in/anomaly stream through the agent: (EnrolResult, normal run, anomaly run)."""
    alarm = AlarmConfig()
    res, _ = enrol_paths(enrol, engine, bundle.frontend.sample_rate, policy=policy_for({}, alarm), score=score)
    return (
        res,
        replay(bundle, engine, res.bank, normal, alarm.model_dump()),
        replay(bundle, engine, res.bank, anomaly_stream, alarm.model_dump()),
    )


def bench_machine(name: str, sets: dict, bundle: Bundle, engine, log=print) -> dict:
    anomaly_stream = sets["anomaly"]  # each its own recording: the delay counts from its start
    default_alarm = AlarmConfig()
    # Scores do not depend on the threshold: one run of the agent per stream, at the default setting...
    res, normal, anom = enrol_and_replay(bundle, engine, sets["enrol"], sets["normal"], anomaly_stream)
    for run in (normal, anom):  # ...and its alarms are exactly what the Detector gives on the recorded scores
        assert offline_alarms(run, res.bank.threshold, default_alarm.model_dump(), 1.0) == run.alarms, (
            "offline detector differs"
        )
    trained_on = bundle.trained_on()
    out = {
        "clips": {k: len(v) for k, v in sets.items()},
        # clips the model was trained on: their held-out scores understate new sound's
        "heard_in_training": {
            k: sum(audio_fingerprint(*read_wav(f)) in trained_on for f in v) for k, v in sets.items()
        },
        "median_score": {
            "enrolment held out": float(np.median(res.loo_scores)),
            "unseen normal": float(np.median(normal.scores)),
        },
        "enrolled_hours": sum(wav_info(f).seconds for f in sets["enrol"]) / 3600,
        "settings": {},
        "smoothing": {},
    }
    w = bundle.frontend.window_seconds
    out["oracle"] = {"knn": oracle(normal, anom, default_alarm.model_dump(), w)}
    for label, (setting, alarm_over) in SETTINGS.items():
        alarm_cfg = AlarmConfig(**alarm_over)
        r = evaluate_setting(res, normal, anom, policy_for(setting, alarm_cfg), alarm_cfg.model_dump(), w)
        out["settings"][label] = r
        fa, det = r["false_alarms"], r["detection"]
        log(
            f"{name:7s} {label:38s} thr {r['threshold']:.4f}  FA {fa['alarms']} in {60 * fa['hours']:.1f} min"
            f"{_open_share(fa)} = {fa['per_hour']:.2f}/h [{fa['per_hour_ci'][0]:.2f}, {fa['per_hour_ci'][1]:.2f}]  "
            "predicted "
            f"{r['predicted_per_hour']:.3g}/h  "
            f"recall {det['detected']}/{det['clips']} [{det['recall_ci'][0]:.2f}, {det['recall_ci'][1]:.2f}]  "
            f"delay {det['delay_median_s']:.1f} s [{det['delay_ci_s'][0]:.1f}, {det['delay_ci_s'][1]:.1f}]"
        )
    for sec in SWEEP_SECONDS:
        alarm_cfg = AlarmConfig(smooth_seconds=sec)
        out["smoothing"][f"{sec:g} s"] = evaluate_setting(
            res, normal, anom, policy_for({}, alarm_cfg), alarm_cfg.model_dump(), w
        )
    # What a learning period on field audio does: half of the unseen normal clips (every other one,
    # so both domains) join the enrolment; the other half is the unseen stream.
    learn, rest = sets["normal"][::2], sets["normal"][1::2]
    res2, normal2, anom2 = enrol_and_replay(bundle, engine, sets["enrol"] + learn, rest, anomaly_stream)
    out["after_learning"] = evaluate_setting(
        res2, normal2, anom2, policy_for({}, default_alarm), default_alarm.model_dump(), w
    )
    out["after_learning"]["learned_clips"] = len(learn)
    r = out["after_learning"]
    log(
        f"{name:7s} {'after learning half the unseen normals':38s} thr {r['threshold']:.4f}  FA "
        + " | ".join(_cells(r))
    )
    # Other score heads on the same clips (calibrate --score HEAD), each through the agent again
    out["heads"] = {}
    for head in HEADS_COMPARED:
        resh, normal_h, anom_h = enrol_and_replay(
            bundle, engine, sets["enrol"], sets["normal"], anomaly_stream, score=head
        )
        out["heads"][head] = {}
        out["oracle"][head] = oracle(normal_h, anom_h, default_alarm.model_dump(), w)
        for label in HEAD_SETTINGS:
            setting, alarm_over = SETTINGS[label]
            alarm_cfg = AlarmConfig(**alarm_over)
            r = evaluate_setting(resh, normal_h, anom_h, policy_for(setting, alarm_cfg), alarm_cfg.model_dump(), w)
            out["heads"][head][label] = r
            log(
                f"{name:7s} {'--score ' + head + ', ' + label:38s} thr {r['threshold']:.4f}  FA "
                + " | ".join(_cells(r))
            )
    return out


def _open_share(fa: dict) -> str:
    share = fa["in_alarm_share"]
    return f" (in alarm {100 * share:.0f} % of the time)" if share >= 0.005 else ""


def _cells(s: dict) -> tuple[str, str, str]:
    """False alarms, recall and delay of one setting, as table cells."""
    fa, det = s["false_alarms"], s["detection"]
    return (
        f"{fa['alarms']} in {60 * fa['hours']:.1f} min" + _open_share(fa),
        f"{det['detected']}/{det['clips']} = {det['recall']:.2f} [{det['recall_ci'][0]:.2f}, "
        f"{det['recall_ci'][1]:.2f}]",
        f"{det['delay_median_s']:.1f} s [{det['delay_ci_s'][0]:.1f}, {det['delay_ci_s'][1]:.1f}]"
        if det["detected"]
        else "-",
    )


def _rate_cells(s: dict) -> str:
    """False alarms, their rate with its interval, the predicted rate, recall and delay: table cells."""
    fa = s["false_alarms"]
    count, recall, delay = _cells(s)
    lo, hi = fa["per_hour_ci"]
    return f"{count} | {fa['per_hour']:.2f} [{lo:.2f}, {hi:.2f}] | {s['predicted_per_hour']:.3g} | {recall} | {delay}"


def table(results: dict) -> str:
    rows = [
        "| machine | setting | threshold | false alarms (unseen normal) | per hour, 95 % interval | predicted per "
        "hour | "
        "recall, 95 % interval | delay, median [95 %] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, r in results["machines"].items():
        for label, s in r["settings"].items():
            rows.append(f"| {m} | {label} | {s['threshold']:.4f} | {_rate_cells(s)} |")
    return "\n".join(rows)


def sweep_table(results: dict) -> str:
    rows = [
        "| machine | running median over | threshold (1 a week) | false alarms (unseen normal) | recall, 95 % "
        "interval | "
        "delay, median [95 %] |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results["machines"].items():
        for label, s in r["smoothing"].items():
            rows.append(
                f"| {m} | {label} ({s['rule']['smooth_windows']} windows) | {s['threshold']:.4f} | "
                + " | ".join(_cells(s))
                + " |"
            )
    return "\n".join(rows)


def learning_table(results: dict) -> str:
    rows = [
        "| machine | enrolled + learned clips | threshold (1 a week) | false alarms (other half of the unseen "
        "normal) | "
        "recall, 95 % interval | delay, median [95 %] |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results["machines"].items():
        s = r["after_learning"]
        rows.append(
            f"| {m} | {r['clips']['enrol']} + {s['learned_clips']} | {s['threshold']:.4f} | "
            + " | ".join(_cells(s))
            + " |"
        )
    return "\n".join(rows)


def heads_table(results: dict) -> str:
    rows = [
        "| machine | score head | setting | false alarms (unseen normal) | per hour, 95 % interval | predicted per "
        "hour | recall, 95 % interval | delay, median [95 %] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, r in results["machines"].items():
        runs = [("knn (the default model's own)", r["settings"])] + list(r.get("heads", {}).items())
        for head, settings in runs:
            for label in HEAD_SETTINGS:
                rows.append(f"| {m} | {head} | {label} | {_rate_cells(settings[label])} |")
    return "\n".join(rows)


def oracle_table(results: dict) -> str:
    rows = [
        "| machine | score head | threshold at the default budget | lowest threshold without a false alarm "
        "(found on the unseen stream) | recall there, 95 % interval | recall at the default budget |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results["machines"].items():
        for head, o in r.get("oracle", {}).items():
            at = r["settings"] if head == "knn" else r["heads"][head]
            d, dd = o["detection"], at["default (1 a week)"]["detection"]
            rows.append(
                f"| {m} | {head} | {at['default (1 a week)']['threshold']:.4f} | {o['threshold']:.4f} | "
                f"{d['detected']}/{d['clips']} = {d['recall']:.2f} [{d['recall_ci'][0]:.2f}, {d['recall_ci'][1]:.2f}]"
                f" | {dd['detected']}/{dd['clips']} |"
            )
    return "\n".join(rows)


def overlap_table(results: dict) -> str:
    rows = [
        "| machine | enrolment clips the model was trained on | unseen normal clips it was trained on | median "
        "score: enrolment held out | median score: unseen normal | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results["machines"].items():
        h, c, ms = r["heard_in_training"], r["clips"], r["median_score"]
        lo, un = ms["enrolment held out"], ms["unseen normal"]
        rows.append(
            f"| {m} | {h['enrol']} of {c['enrol']} | {h['normal']} of {c['normal']} | {lo:.4f} | {un:.4f} | "
            f"{un / max(lo, 1e-12):.2f} |"
        )
    return "\n".join(rows)


def write_docs(results: dict, doc: Path) -> None:
    head = (
        f"Measured {results['date']} on {results['machine']} (`python benchmarks/stream.py`), model "
        f"{results['model']}, "
        f"hop 1 s, alarm after {results['alarm']['raise_after']} of {results['alarm']['of_last']} windows, "
        f"clear after {results['alarm']['clear_after']}. Every clip is its own recording: no window spans two, "
        "and the detector starts afresh (with its warm-up) in each."
    )
    block = (
        f"{MARK_BEGIN}\n{head}\n\n{table(results)}\n\nSmoothing horizon at the default budget (same streams; the "
        f"default is {AlarmConfig().smooth_seconds:g} s):\n\n{sweep_table(results)}\n\nAfter a learning period on "
        "field audio "
        "(every other unseen normal clip joins the enrolment; the others are the unseen "
        f"stream):\n\n{learning_table(results)}\n\nOther score heads (`calibrate --score HEAD`) on the same clips "
        f"and streams:\n\n{heads_table(results)}\n\nThe best any threshold can do with each head: the lowest "
        "threshold at which the unseen normal stream raises no alarm, found by looking at that stream (no "
        f"calibration could pick it), and the recall it leaves:\n\n{oracle_table(results)}\n\nClips the model was "
        "trained on, and how far held-out "
        f"enrolment windows and unseen normal windows score:\n\n{overlap_table(results)}\n"
        f"{MARK_END}"
    )
    text = doc.read_text()
    if MARK_BEGIN in text:
        text = text.split(MARK_BEGIN)[0] + block + text.split(MARK_END, 1)[1]
    else:
        text += "\n## Streaming: false alarms, recall and delay\n\n" + block + "\n"
    doc.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default ../shared/data)")
    p.add_argument(
        "--machines", nargs="+", default=["valve", "slider", "fan"], help="which machines (default all three)"
    )
    p.add_argument("--model", default="default", help="bundle name or directory (default: the built-in model)")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite the table in docs/performance.md")
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "stream.json", help="JSON file to write"
    )
    a = p.parse_args(argv)
    bundle = Bundle.load(a.model)
    engine = OnnxEngine(bundle, "cpu")
    all_sets = machines(a.data)
    results = {
        "date": _dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "model": f"{bundle.name} {bundle.version}",
        "alarm": AlarmConfig().model_dump(),
        # every clip is its own recording: no window spans two, the detector starts afresh in each
        "splice": False,
        "machines": {},
    }
    for m in a.machines:
        results["machines"][m] = bench_machine(m, all_sets[m], bundle, engine)
    print()
    print(table(results))
    print()
    print(sweep_table(results))
    print()
    print(learning_table(results))
    print()
    print(heads_table(results))
    print()
    print(oracle_table(results))
    print()
    print(overlap_table(results))
    out = a.out
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwritten {out}")
    if not a.no_docs:
        write_docs(results, ROOT / "docs" / "performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
