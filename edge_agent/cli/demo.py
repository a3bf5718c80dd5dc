"""``edge-agent demo``: the whole pipeline on bundled real clips, no set-up.

It enrols a fan (MIMII fan id_00, bundled normal clips) with the built-in model into a temporary
state directory, exactly as ``edge-agent calibrate --from`` does, then replays normal clips, two
anomalous clips and a normal clip again through the ring buffer and the production agent, and
prints each window's score and what the agent decides.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_agent.audio.wavio import wav_info
from edge_agent.runtime.sink import Sink, WindowEvent

CLIPS = Path(__file__).parent.parent / "demo_clips"
MACHINE = "demo-fan"


def add_parsers(command) -> None:
    d = command(
        "demo",
        help="the whole pipeline on bundled real clips, no set-up",
        description="Enrol a fan from bundled normal clips with the built-in model, then replay normal and "
        "anomalous clips through the production path and print what the agent decides.",
    )
    d.add_argument("--realtime", action="store_true", help="replay at real-time pace (default: as fast as possible)")
    d.add_argument("--model", default="default", help="bundle name or directory (default: the built-in model)")
    d.set_defaults(func=cmd_demo)


def cmd_demo(a) -> int:
    return run_demo(realtime=a.realtime, model=a.model)


def _segments(files: list[Path]) -> list[tuple[float, float, Path]]:
    out, t = [], 0.0
    for f in files:
        d = wav_info(f).seconds
        out.append((t, t + d, f))
        t += d
    return out


def run_demo(realtime: bool = False, model: str = "default", out=None) -> int:
    from calibration.policy import ThresholdPolicy
    from calibration.service import enrol_paths
    from edge_agent.config import parse_config
    from edge_agent.engine import open_engine
    from edge_agent.model.bundle import Bundle
    from edge_agent.publish.sinks import ConsoleSink
    from edge_agent.runtime.daemon import build_daemon
    from edge_agent.scoring.bank import bank_path

    out = out or sys.stdout
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    bundle = Bundle.load(model)
    engine = open_engine(bundle, "auto")
    fe = bundle.frontend
    replay = sorted((CLIPS / "replay").glob("*.wav"))
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as state:
        cfg = parse_config(
            {
                "node_id": "demo",
                "model": model,
                "state_dir": state,
                # the demo's state is a temporary folder, deleted at the end: no evidence files to name
                "evidence": {"enabled": False},
                "status_interval_seconds": 1e9,  # no periodic status lines between the demo's own
                "machines": {
                    MACHINE: {"input": {"file": str(CLIPS / "replay"), "realtime": realtime}, "hop_seconds": 1.0}
                },
            },
            "demo",
        )
        say(
            f"edge-agent demo: model {bundle.name} {bundle.version}, window {fe.window_seconds:g} s, hop 1 s, "
            f"engine {', '.join(engine.providers)}"
        )
        enrol_files = sorted((CLIPS / "enrol").glob("*.wav"))
        say(f"1) enrolling '{MACHINE}' from {len(enrol_files)} normal clips of a real fan (MIMII fan id_00) ...")
        a = cfg.machines[MACHINE].alarm
        res, _ = enrol_paths(
            enrol_files,
            engine,
            int(fe.sample_rate * 1.0),
            policy=ThresholdPolicy(0.90, None, 1.0, a.raise_after, a.of_last),
        )
        res.bank.save(bank_path(Path(state), MACHINE))
        say(
            f"   {sum(res.bank.meta['enrolled_windows'].values())} windows, bank of {len(res.bank.embeddings)} "
            "entries, "
            f"threshold {res.bank.threshold:.4f} (gamma fit, 90th percentile); alarm after {a.raise_after} of "
            f"{a.of_last} windows above it, "
            f"clear after {a.clear_after} below"
        )
        heard = (res.bank.meta.get("training_overlap") or {}).get("heard_clips")
        if heard:  # the demo's clips are MIMII training clips; a plant enrols its own machine's sound
            say(
                f"   ({heard} of these clips were in the model's training set: fine for a demo; enrolling your own "
                "machine, calibrate fits the threshold on sound the model has not heard)"
            )
        segs = _segments(replay)
        say(
            f"2) replaying {len(replay)} clips through the ring buffer "
            f"({'real time' if realtime else 'as fast as possible'}):"
        )
        for t0, t1, f in segs:
            say(f"   {t0:5.1f}-{t1:5.1f} s  {f.name}")
        say("3) what the agent decides (one line per window; '*' = above threshold):")
        thr = res.bank.threshold
        lines = _ScoreLines(segs, fe.window_seconds, thr, say)
        recorder = _AlarmRecorder()
        sinks = (ConsoleSink(out=out), lines, recorder)
        agent = build_daemon(cfg, console=False, health=False, bundle=bundle, engine=engine, sinks=sinks).agent
        per_seg = lines.per_seg
        rc = agent.run()
        alarms = recorder.events
        say("4) summary per clip:")
        for _, _, f in segs:
            sc = np.array(per_seg[f])
            above = int(np.sum(sc > thr))
            mean = f"{sc.mean():.4f}" if len(sc) else "-"
            say(f"   {f.name:<32} windows {len(sc):3d}  mean score {mean}  above threshold {above}")
        starts = [e for e in alarms if e[1]["event"] == "start"]
        ends = [e for e in alarms if e[1]["event"] == "end"]
        say(
            f"   alarms: {len(starts)} started, {len(ends)} ended"
            + "".join(f"; alarm {i + 1} from {t0:.1f} s to {t1:.1f} s" for i, (t0, t1) in enumerate(_spans(alarms)))
        )
        return rc


class _ScoreLines(Sink):
    """One line per window, with a bar, and each clip's scores for the summary."""

    def __init__(self, segs: list, window_seconds: float, thr: float, say):
        self.segs, self.window_seconds, self.thr, self.say = segs, window_seconds, thr, say
        self.per_seg: dict[Path, list[float]] = {f: [] for _, _, f in segs}

    def window(self, ev: WindowEvent) -> None:
        start = ev.offset - self.window_seconds
        mid = start + self.window_seconds / 2
        seg = next((f for t0, t1, f in self.segs if t0 <= mid < t1), self.segs[-1][2])
        self.per_seg[seg].append(ev.score)
        bar = "#" * int(max(0, min(40, 20 * ev.score / max(self.thr, 1e-9))))
        self.say(
            f"   {start:5.1f}-{ev.offset:5.1f} s  score {ev.score:.4f} {'*' if ev.score > self.thr else ' '} "
            f"{bar:<40} {ev.state}"
        )


class _AlarmRecorder(Sink):
    """Keeps alarm events with the stream time at which they were raised."""

    def __init__(self):
        self.events: list[tuple[float, dict]] = []
        self._offset = 0.0

    def window(self, ev: WindowEvent) -> None:
        self._offset = ev.offset

    def handle(self, kind, machine, payload):
        if kind == "alarm":
            self.events.append((self._offset, payload))


def _spans(events: list[tuple[float, dict]]) -> list[tuple[float, float]]:
    spans, start = [], None
    for t, p in events:
        if p["event"] == "start":
            start = t
        elif p["event"] == "end" and start is not None:
            spans.append((start, t))
            start = None
    return spans
