"""An operator who marks every false alarm "normal": the unseen normal recordings of each dev machine
replayed (each its own recording, as benchmarks/stream.py does) through an agent whose operator
answers every alarm with the ``normal`` command; then the anomalous recordings through the bank
that feedback made, against the bank before it. Does feedback stop the false alarms, and does the
agent go deaf to real faults?

    python benchmarks/feedback.py            # table, benchmarks/results/feedback.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.network import write_results  # noqa: E402
from benchmarks.stream import (  # noqa: E402
    detection,
    machines,
    poisson_rate,
    policy_for,
    replay,
    replay_setup,
)
from calibration.feedback import Feedback  # noqa: E402
from calibration.service import enrol_paths  # noqa: E402
from edge_agent.config import AlarmConfig  # noqa: E402
from edge_agent.engine import OnnxEngine  # noqa: E402
from edge_agent.model.bundle import Bundle  # noqa: E402
from edge_agent.runtime.commands import CommandDesk  # noqa: E402
from edge_agent.runtime.daemon import agent_from_config  # noqa: E402
from edge_agent.runtime.sink import Sink  # noqa: E402
from edge_agent.scoring.bank import MemoryBank, bank_path  # noqa: E402


class _Operator(Sink):
    """Answers every alarm start with "normal", as soon as the agent runs commands again."""

    def __init__(self, desk: CommandDesk):
        self.desk, self.offset = desk, 0.0
        self.starts: list[float] = []  # stream offsets of the alarms
        self.answers: list[dict] = []

    def window(self, ev) -> None:
        self.offset = ev.offset

    def handle(self, kind, machine, p) -> None:
        if kind == "alarm" and p["event"] == "start":
            self.starts.append(self.offset)
            body = json.dumps({"command": "normal", "alarm_id": p["alarm_id"]})
            self.desk.submit(machine, body, "benchmark", self.answers.append)


def with_feedback(bundle, engine, bank: MemoryBank, files: list[Path], alarm: dict, policy, fit_feedback=False):
    """The normal stream with the operator: (alarm offsets, answers, the bank at the end, spans)."""
    with tempfile.TemporaryDirectory(prefix="feedback-") as d:
        d = Path(d)
        cfg, spans = replay_setup(d, bank, files, alarm)
        desk = CommandDesk()
        op = _Operator(desk)
        agent_from_config(
            cfg, [op], bundle=bundle, engine=engine, commands=desk, feedback=Feedback(d, {"m": policy}, fit_feedback)
        ).run()
        final = MemoryBank.load(bank_path(d, "m"))
    return op.starts, op.answers, final, spans


def bench(name: str, sets: dict, bundle: Bundle, engine, fit_feedback: bool = False) -> dict:
    alarm = AlarmConfig()
    policy = policy_for({}, alarm)
    res, _ = enrol_paths(sets["enrol"], engine, bundle.frontend.sample_rate, policy=policy)
    starts, answers, final, spans = with_feedback(
        bundle, engine, res.bank, sets["normal"], alarm.model_dump(), policy, fit_feedback
    )
    seconds = spans[-1][1]
    half = seconds / 2
    first, second = sum(s < half for s in starts), sum(s >= half for s in starts)
    anom_before = replay(bundle, engine, res.bank, sets["anomaly"], alarm.model_dump())
    anom_after = replay(bundle, engine, final, sets["anomaly"], alarm.model_dump())
    win = bundle.frontend.window_seconds
    out = {
        "normal_minutes": seconds / 60,
        "false_alarms": len(starts),
        "first_half": first,
        "second_half": second,
        "per_hour_first_half": poisson_rate(first, half / 3600),
        "per_hour_second_half": poisson_rate(second, half / 3600),
        "feedback_accepted": sum(bool(a.get("ok")) for a in answers),
        "feedback_refused": [a.get("error") for a in answers if not a.get("ok")][:5],
        "threshold_before": res.bank.threshold,
        "threshold_after": final.threshold,
        "bank_entries_before": int(len(res.bank.embeddings)),
        "bank_entries_after": int(len(final.embeddings)),
        "recall_before": detection(anom_before, anom_before.alarms, win),
        "recall_after": detection(anom_after, anom_after.alarms, win),
    }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--machines", nargs="+", default=["valve", "slider", "fan"])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "feedback.json")
    p.add_argument(
        "--fit-feedback",
        action="store_true",
        help="fit the threshold on the feedback windows' held-out scores too (the design the agent does not use)",
    )
    a = p.parse_args(argv)
    bundle = Bundle.load("default")
    engine = OnnxEngine(bundle, "cpu")
    sets = machines(a.data)
    results = {}
    print("| machine | false alarms (unseen normal), first half / second half | feedback accepted | threshold "
          "before -> after | recall on anomalies, bank before | after feedback |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in a.machines:
        r = results[name] = bench(name, sets[name], bundle, engine, a.fit_feedback)
        rb, ra = r["recall_before"], r["recall_after"]
        print(
            f"| {name} | {r['false_alarms']} in {r['normal_minutes']:.1f} min: {r['first_half']} / {r['second_half']} "
            f"| {r['feedback_accepted']} | {r['threshold_before']:.4f} -> {r['threshold_after']:.4f} "
            f"| {rb['detected']}/{rb['clips']} [{rb['recall_ci'][0]:.2f}, {rb['recall_ci'][1]:.2f}] "
            f"| {ra['detected']}/{ra['clips']} [{ra['recall_ci'][0]:.2f}, {ra['recall_ci'][1]:.2f}] |",
            flush=True,
        )
    write_results(a.out, model=bundle.describe(), fit_feedback=a.fit_feedback, machines=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
