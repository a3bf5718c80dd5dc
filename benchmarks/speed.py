"""Speed benchmark of the runtime on this machine. Prints a table, writes JSON, and rewrites the
table between the markers in docs/performance.md.

1. per-window time of a stream at hop 1 s on one thread, split into front end (frames shared with
   the previous window; the batch front end beside it), engine and k-NN (median, p95);
2. peak RSS and CPU % of `edge-agent run` with one machine (real-time and fast replay, hop 1 s);
3. how many streams one process sustains in real time;
4. k-NN time against bank size (1k, 10k, 100k entries; numpy's BLAS on one thread, as `run` has
   it), exact and on a 64-d PCA of the bank, and what the PCA changes in clip AUC on real sound;
5. end-to-end alarm latency: first anomalous sample into the ring buffer -> alarm message at a
   subscriber of a real Mosquitto broker, and the part that is not the inherent window/k-of-n wait.

    python benchmarks/speed.py [--quick] [--compare fast]

The default model (the four-seed ensemble) and the bundle named by --compare (the fast model
distilled from it) are measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.engine import OnnxEngine  # noqa: E402
from edge_agent.model.blas import single_thread_blas  # noqa: E402
from edge_agent.model.bundle import Bundle  # noqa: E402
from edge_agent.runtime.sink import Sink, WindowEvent  # noqa: E402
from edge_agent.scoring.bank import knn_distance  # noqa: E402

DEMO = ROOT / "edge_agent" / "demo_clips"
MARK_BEGIN, MARK_END = "<!-- speed-table:begin -->", "<!-- speed-table:end -->"


def stats(xs) -> dict:
    a = np.asarray(xs) * 1e3
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95))}


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _stream_audio(seconds: float, sample_rate: int) -> np.ndarray:
    """Real machine sound for the per-window rows: the demo's replay clips, looped to ``seconds``."""
    from edge_agent.audio.convert import prepare
    from edge_agent.audio.wavio import read_wav

    parts = []
    for p in sorted((DEMO / "replay").glob("*.wav")):
        x, sr = read_wav(p)
        parts.append(prepare(x, sr, sample_rate))
    x = np.concatenate(parts)
    return np.tile(x, int(np.ceil(seconds * sample_rate / len(x))))[: int(seconds * sample_rate)]


def bench_window(bundle: Bundle, n: int, torch_ckpts: list[Path], threads: int = 1) -> dict:
    """Per-window compute as a stream sees it: windows of real audio at hop 1 s, one after another,
    through the stream's front end (frames shared with the previous window where the features allow
    it), the engine on ``threads`` threads at batch 1, and the k-NN. The batch front end (every frame
    computed for every window) is timed on the same windows."""
    from edge_agent.model.stream_frontend import StreamFrontend

    fe = bundle.frontend
    hop = fe.sample_rate  # 1 s
    x = _stream_audio((n + 5) * hop / fe.sample_rate + fe.window_seconds, fe.sample_rate)
    eng = OnnxEngine(bundle, "cpu", threads=threads)
    bank = unit(np.random.default_rng(0).normal(size=(106, bundle.embedding_dim)))  # 16 centres + 90 target windows
    sf = StreamFrontend(fe)
    for i in range(5):
        eng.embed(sf(x[i * hop : i * hop + fe.window_samples], i * hop))
    t_fe, t_batch, t_eng, t_knn = [], [], [], []
    for i in range(5, n + 5):
        win = x[i * hop : i * hop + fe.window_samples]
        t0 = time.perf_counter()
        f = sf(win, i * hop)
        t1 = time.perf_counter()
        e = eng.embed(f)
        t2 = time.perf_counter()
        knn_distance(e, bank, 1)
        t3 = time.perf_counter()
        fe(win[None])
        t4 = time.perf_counter()
        t_fe.append(t1 - t0), t_eng.append(t2 - t1), t_knn.append(t3 - t2), t_batch.append(t4 - t3)
    out = {
        "threads": threads,
        "frontend": stats(t_fe),
        "frontend_batch": stats(t_batch),
        "frames_reused_share": sf.frames_reused / max(1, sf.frames_reused + sf.frames_computed),
        "engine_onnxruntime": stats(t_eng),
        "knn_106": stats(t_knn),
    }
    total = np.array(t_fe) + np.array(t_eng) + np.array(t_knn)
    out["total_onnxruntime"] = stats(total)
    if torch_ckpts:
        import torch

        from export.onnx_export import load_models

        model = load_models(torch_ckpts)[0].eval()
        feats = fe(x[None, : fe.window_samples])
        inputs = [torch.from_numpy(feats[k]) for k in model.input_names]
        with torch.no_grad():
            for _ in range(5):
                model(*inputs)
            t_t = []
            for _ in range(n):
                t0 = time.perf_counter()
                model(*inputs)
                t_t.append(time.perf_counter() - t0)
        out["engine_torch_eager"] = stats(t_t)
        out["onnxruntime_speedup_vs_torch"] = (
            out["engine_torch_eager"]["median_ms"] / out["engine_onnxruntime"]["median_ms"]
        )
    out["window_seconds"] = fe.window_seconds
    out["per_10s_audio_hop_1s_ms"] = out["total_onnxruntime"]["median_ms"] * 10  # 10 windows per 10 s at hop 1 s
    out["real_time_factor_hop_1s"] = out["total_onnxruntime"]["median_ms"] / 1000.0
    return out


def _state_dir_with_bank(tmp: Path, bundle: Bundle, machines: list[str], alarms: bool = True) -> Path:
    from calibration.policy import DCASE_POLICY, ThresholdPolicy
    from calibration.service import enrol_paths
    from edge_agent.scoring.bank import bank_path

    # the demo's threshold (90th percentile): its replay clips are chosen to alarm at it, and the
    # latency rows need the alarm (with the 1-a-week default these clips do not raise it)
    engine = OnnxEngine(bundle, "cpu")
    bank = enrol_paths(
        sorted((DEMO / "enrol").glob("*.wav")),
        engine,
        bundle.frontend.sample_rate,
        policy=DCASE_POLICY if alarms else ThresholdPolicy(),
    )[0].bank
    for m in machines:
        bank.save(bank_path(tmp, m))
    return tmp


def bench_process(
    seconds: float, web: bool = False, model: str = "default", realtime: bool = True, quiet: bool = False
) -> dict:
    """Peak RSS and CPU of `edge-agent run` with one machine replaying (in real time, or as fast as
    it can be scored), hop 1 s; with ``web``, the status page on and polled every 2 s as its script
    does. The demo's replay clips raise alarms (their evidence is written meanwhile); ``quiet``
    replays its normal enrolment clips against the default 1-a-week threshold instead: a healthy
    machine, the agent's steady state."""
    import socket
    import threading
    import urllib.request

    tmp = Path(tempfile.mkdtemp(prefix="speed-"))
    _state_dir_with_bank(tmp, Bundle.load(model), ["fan01"], alarms=not quiet)
    replay = DEMO / ("enrol" if quiet else "replay")
    cfg = tmp / "c.yaml"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg.write_text(
        f"state_dir: {tmp}\nmodel: {model}\nengine: cpu\nmachines:\n  fan01:\n    input: "
        f"{{file: {replay}, realtime: {str(realtime).lower()}, loop: true}}\n"
        "    hop_seconds: 1.0\n" + (f'web: {{listen: "127.0.0.1:{port}"}}\n' if web else "")
    )
    polling = threading.Event()

    def poll():  # what an open page asks for
        after = ""
        while not polling.wait(2.0):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5).read()
                pts = json.loads(
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/machines/fan01/scores{after}", timeout=5
                    ).read()
                )["points"]
                after = f"?after={pts[-1][0]}" if pts else after
            except OSError:
                pass

    code = "import sys\nfrom edge_agent.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    p = subprocess.Popen(
        [sys.executable, "-c", code, "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tick

    time.sleep(8.0)  # start-up (imports, model load, warm-up) is not steady state
    poller = threading.Thread(target=poll, daemon=True)
    if web:
        poller.start()
    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu(), time.monotonic()
    polling.set()
    status = open(f"/proc/{p.pid}/status").read()
    hwm = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1]) / 1024
    rss = int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]) / 1024
    p.terminate()
    p.wait(20)
    shutil.rmtree(tmp, ignore_errors=True)
    share = (c1 - c0) / (t1 - t0)
    return {
        "peak_rss_mb": hwm,
        "rss_mb": rss,
        "cpu_percent_of_one_core": 100 * share,
        # every thread of the process (capture, loop, front end, engine, outbox): in real time, the
        # CPU one machine costs per 10 s of its audio
        "cpu_ms_per_10s_audio": 1e4 * share if realtime else None,
        "measured_seconds": seconds,
    }


def bench_streams(counts: list[int], seconds: float) -> dict:
    """Streams one process keeps up with: N machines replaying in real time, hop 1 s."""
    from edge_agent.config import parse_config
    from edge_agent.runtime.daemon import agent_from_config

    bundle = Bundle.load("default")
    engine = OnnxEngine(bundle, "cpu")
    results = {}
    for n in counts:
        tmp = Path(tempfile.mkdtemp(prefix="streams-"))
        machines = [f"m{i:03d}" for i in range(n)]
        _state_dir_with_bank(tmp, bundle, machines)
        cfg = parse_config(
            {
                "state_dir": str(tmp),
                "engine": "cpu",
                "status_interval_seconds": 1e9,
                "machines": {
                    m: {"input": {"file": str(DEMO / "replay"), "realtime": True, "loop": True, "continuous": True}}
                    for m in machines
                },
            }
        )
        agent = agent_from_config(cfg, [Sink()], bundle=bundle, engine=engine)
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        time.sleep(seconds)
        lag = max(s.source.ring.available() / s.source.sample_rate for s in agent.streams.values())
        windows = [s.windows_processed for s in agent.streams.values()]
        agent.stop()
        th.join(30)
        expected = seconds - bundle.frontend.window_seconds
        ok = lag < 2.0 and min(windows) >= 0.9 * expected
        results[n] = {
            "max_backlog_seconds": lag,
            "min_windows": min(windows),
            "expected_windows": expected,
            "real_time": ok,
            "mean_batch": agent.stats.windows / max(1, agent.stats.batches),
        }
        shutil.rmtree(tmp, ignore_errors=True)
        print(
            f"  {n} streams: backlog {lag:.2f} s, windows {min(windows)}/{expected:.0f}, "
            f"{'real time' if ok else 'FALLS BEHIND'}",
            flush=True,
        )
        if not ok:
            break
    return results


def bench_knn(dim: int, sizes=(1_000, 10_000, 100_000), n=30, compact_dim: int = 64) -> dict:
    """k-NN time of one window against random banks: exact, and on the bank's PCA projection (what
    calibrate builds above --compact-above entries), through ``MemoryBank.score``."""
    from edge_agent.scoring.bank import MemoryBank, fit_projection

    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        entries = unit(rng.normal(size=(size, dim)))
        q = unit(rng.normal(size=(1, dim)))
        row = {}
        for name, proj in (("exact", None), ("pca", fit_projection(entries, compact_dim))):
            bank = MemoryBank(entries, np.array(["source"] * size), np.array(["sample"] * size), "x", projection=proj)
            bank.score(q)  # the entries' projection is made once, at the first window
            ts = []
            for _ in range(n):
                t = time.perf_counter()
                bank.score(q)
                ts.append(time.perf_counter() - t)
            row[name] = stats(ts)
        out[size] = {**row, "pca_dim": compact_dim}
        del entries
    return out


def bench_projection_quality(bundle: Bundle, compact_dim: int = 64) -> dict:
    """What the PCA bank costs in detection on real sound: every training window of a machine kept in
    the bank (hop 0.5 s), test clips scored (mean window score) against the exact and the projected
    bank; clip AUC of both and the rank correlation of the window scores."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from edge_agent.audio.convert import prepare
    from edge_agent.audio.wavio import read_wav
    from edge_agent.model.outputs import embed_signal
    from edge_agent.scoring.bank import MemoryBank, fit_projection

    data = Path(os.environ.get("EDGE_AGENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
    eng = OnnxEngine(bundle, "cpu")
    fe = bundle.frontend
    out = {}
    for name, folder in (("valve", data / "dcase2023t2" / "valve"), ("fan", data / "mimii" / "fan")):
        if not folder.is_dir():
            continue

        def emb(p, hop):
            x, sr = read_wav(p)
            return embed_signal(eng, fe, prepare(x, sr, fe.sample_rate), int(hop * fe.sample_rate))

        entries = np.concatenate([emb(p, 0.5) for p in sorted((folder / "train").glob("*.wav"))])
        tests = sorted((folder / "test").glob("*.wav"))
        labels = np.array([("anomaly" in p.name) for p in tests])
        per_clip = [emb(p, 1.0) for p in tests]
        dim = min(compact_dim, len(entries) - 1)
        exact = MemoryBank(entries, np.array(["source"] * len(entries)), np.array(["sample"] * len(entries)), "x")
        proj = MemoryBank(exact.embeddings, exact.domains, exact.kinds, "x", projection=fit_projection(entries, dim))
        se = [exact.score(e) for e in per_clip]
        sp = [proj.score(e) for e in per_clip]
        out[name] = {
            "bank_entries": int(len(entries)),
            "projection_dim": dim,
            "auc_exact": float(roc_auc_score(labels, [s.mean() for s in se])),
            "auc_projected": float(roc_auc_score(labels, [s.mean() for s in sp])),
            "window_rank_correlation": float(spearmanr(np.concatenate(se), np.concatenate(sp))[0]),
        }
    return out


class _Starts(Sink):
    """Stream offsets at which alarms started."""

    def __init__(self):
        self.offsets: list[float] = []

    def window(self, ev: WindowEvent) -> None:
        if ev.decision is not None and ev.decision.kind == "start":
            self.offsets.append(ev.offset)


def bench_latency(repeats: int) -> dict:
    """First anomalous sample into the ring -> alarm message received from a real Mosquitto."""
    sys.path.insert(0, str(ROOT / "tests"))
    from brokers import Broker, Subscriber

    from edge_agent.config import parse_config
    from edge_agent.runtime.daemon import build_daemon

    bundle = Bundle.load("default")
    engine = OnnxEngine(bundle, "cpu")
    out = []
    for _ in range(repeats):
        tmp = Path(tempfile.mkdtemp(prefix="latency-"))
        broker = Broker(tmp / "broker").start()
        _state_dir_with_bank(tmp, bundle, ["fan01"])
        clips = tmp / "clips"
        clips.mkdir()
        for name in ("01_normal_id_00_00000018.wav", "02_anomaly_id_00_00000002.wav"):
            shutil.copy(DEMO / "replay" / name, clips / name)
        cfg = parse_config(
            {
                "node_id": "bench",
                "state_dir": str(tmp),
                "engine": "cpu",
                # one input whose sound turns anomalous (continuous: the two clips as one recording)
                "machines": {"fan01": {"input": {"file": str(clips), "realtime": True, "continuous": True}}},
                "mqtt": {"host": "127.0.0.1", "port": broker.port, "homeassistant": {"enabled": False}},
            }
        )
        sub = Subscriber(broker.port, "edge-agent/bench/fan01/alarm")
        got: list[float] = []
        sub.c.on_message = lambda c, u, m, got=got: got.append(time.time()) if b'"start"' in m.payload else None
        starts = _Starts()
        # the production wiring
        daemon = build_daemon(cfg, console=False, health=False, bundle=bundle, engine=engine, sinks=(starts,))
        agent, pub = daemon.agent, daemon.durable
        pub.connected.wait(10)
        raised_at_offset = starts.offsets
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        th.join(60)
        t_end = time.monotonic() + 5
        while not got and time.monotonic() < t_end:
            time.sleep(0.01)
        src = agent.streams["fan01"].source
        anomaly = next(fs for fs in src.file_starts if "anomaly" in fs[0].name)
        if got and raised_at_offset:
            anomaly_offset = anomaly[2] / src.sample_rate
            latency = got[0] - anomaly[1]
            # The first anomalous block enters the ring when its last sample is "recorded"; from then on
            # the agent must wait for audio until the end of the window that raises the alarm.
            inherent = raised_at_offset[0] - anomaly_offset - src.block_seconds
            out.append({"latency_s": latency, "inherent_s": inherent, "processing_and_delivery_s": latency - inherent})
        sub.close()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if not out:
        return {"error": "no alarm was raised"}
    return {k: float(np.median([o[k] for o in out])) for k in out[0]} | {"runs": out}


def _ms(s: dict) -> str:
    return f"{s['median_ms']:.2f} ms (p95 {s['p95_ms']:.2f})"


def _window_rows(w: dict) -> list[tuple[str, str]]:
    rows = [
        (
            "front end per window, stream (batch)",
            f"{_ms(w['frontend'])} ({w['frontend_batch']['median_ms']:.2f}); "
            f"{100 * w['frames_reused_share']:.0f} % of frames reused",
        ),
        (f"engine per window, ONNX Runtime CPU, {w['threads']} thread", _ms(w["engine_onnxruntime"])),
    ]
    if "engine_torch_eager" in w:
        rows.append(
            (
                "engine per window, PyTorch eager",
                f"{_ms(w['engine_torch_eager'])}; ONNX Runtime {w['onnxruntime_speedup_vs_torch']:.2f}x faster",
            )
        )
    return rows + [
        ("k-NN per window (106 entries)", f"{w['knn_106']['median_ms']:.3f} ms"),
        (f"total per {w['window_seconds']:g} s window", _ms(w["total_onnxruntime"])),
        ("**compute per 10 s of audio at hop 1 s**", f"{w['per_10s_audio_hop_1s_ms']:.1f} ms"),
    ]


def _process_row(r: dict) -> str:
    return f"{r['peak_rss_mb']:.0f} MB (CPU {r['cpu_percent_of_one_core']:.1f} % of one core)"


def _quiet_row(r: dict) -> str:
    return f"{r['cpu_ms_per_10s_audio']:.0f} ms per 10 s of audio ({r['cpu_percent_of_one_core']:.2f} % of one core)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument(
        "--ckpts",
        type=Path,
        nargs="*",
        default=sorted((ROOT / "runs" / "default").glob("seed*.ckpt")),
        help="the default model's training checkpoints, for the PyTorch eager comparison",
    )
    p.add_argument(
        "--compare",
        default="fast",
        help="the bundle to measure next to the default in the same run (default: the distilled fast model; '' none)",
    )
    p.add_argument(
        "--only",
        default="",
        metavar="PART[,PART...]",
        help="re-measure only these parts (window, knn, process, streams, latency) and keep the others from "
        "--json; the table says when each part was measured",
    )
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    a = p.parse_args(argv)
    parts = {"window", "knn", "process", "streams", "latency"}
    only = {x for x in a.only.split(",") if x}
    if only - parts:
        p.error(f"--only: unknown part(s) {', '.join(sorted(only - parts))}; choose from {', '.join(sorted(parts))}")
    # as `run` does: the k-NN rows (and the in-process streams) are what a running agent pays
    single_thread_blas()
    bundle = Bundle.load("default")
    models = ["default"] + ([a.compare] if a.compare else [])
    today = _dt.date.today().isoformat()
    res = json.loads(a.json.read_text()) if only and a.json.is_file() else {}
    res.update(
        {
            "date": today,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "models": {m: Bundle.load(m).describe() for m in models},
        }
    )
    measured = res.setdefault("measured", {})
    todo = only or parts
    secs = 10 if a.quick else 30
    if "window" in todo:
        res["window"] = {}
        for m in models:
            print(f"per-window compute, {m} ...", flush=True)
            res["window"][m] = bench_window(
                Bundle.load(m), 30 if a.quick else 200, list(a.ckpts) if m == "default" else []
            )
    if "knn" in todo:
        print("k-NN against bank size ...", flush=True)
        res["knn"] = bench_knn(bundle.embedding_dim, n=10 if a.quick else 50)
        print("PCA bank on real sound ...", flush=True)
        res["projection_quality"] = bench_projection_quality(bundle)
    if "process" in todo:
        res["process"] = {}
        for m in models:
            for mode in ("realtime", "fast"):
                print(f"edge-agent run, one machine, {m}, {mode} replay ...", flush=True)
                res["process"][f"{m}/{mode}"] = bench_process(secs, model=m, realtime=mode == "realtime")
            print(f"edge-agent run, one machine, {m}, real time, normal sound ...", flush=True)
            res["process"][f"{m}/quiet"] = bench_process(secs, model=m, quiet=True)
        print("edge-agent run, one machine, status page on ...", flush=True)
        res["process"]["default/realtime+web"] = bench_process(secs, web=True)
    if "streams" in todo:
        print("streams per process ...", flush=True)
        res["streams"] = bench_streams([4, 8] if a.quick else [8, 16, 32, 48, 64], 12 if a.quick else 20)
    if "latency" in todo:
        print("alarm latency through Mosquitto ...", flush=True)
        res["latency"] = bench_latency(1 if a.quick else 3)
    for part in todo:
        measured[part] = today
    need = {"window": models, "process": [f"{m}/{mode}" for m in models for mode in ("realtime", "fast")]}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    missing = sorted(p for p in parts if p not in res or not all(k in res[p] for k in need.get(p, [])))
    if missing:  # --only against a JSON without the other parts (or without this --compare model)
        print(
            f"wrote {a.json}; no table: it has no {', '.join(missing)} results for {', '.join(models)} "
            f"(run without --only once, or point --json at a full previous result)"
        )
        return 0
    res["streams"] = {int(k): v for k, v in res["streams"].items()}  # JSON keys are text
    res["knn"] = {int(k): v for k, v in res["knn"].items()}
    sustained = max([n for n, r in res["streams"].items() if r["real_time"]], default=0)
    names = [f"{m} ({Bundle.load(m).version})" for m in models]
    per_model = [dict(_window_rows(res["window"][m])) for m in models]
    rows = [(k, *[pm.get(k, "-") for pm in per_model]) for k in per_model[0]]
    for mode in ("realtime", "fast"):
        rows.append(
            (
                f"edge-agent run, one machine, {mode} replay: peak RSS",
                *[_process_row(res["process"][f"{m}/{mode}"]) for m in models],
            )
        )
    if all(f"{m}/quiet" in res["process"] for m in models):
        rows.append(
            (
                "edge-agent run, one machine, real time, normal sound (no alarm): CPU of the whole process",
                *[_quiet_row(res["process"][f"{m}/quiet"]) for m in models],
            )
        )
    rows.append(
        (
            "edge-agent run, real time, status page on and polled: peak RSS",
            _process_row(res["process"]["default/realtime+web"]),
        )
        + ("-",) * (len(models) - 1)
    )
    rows.append(
        (
            "streams sustained in real time (hop 1 s)",
            f"{sustained}" + (" (the most tried)" if sustained == max(res["streams"]) else ""),
        )
        + ("-",) * (len(models) - 1)
    )
    for size, r in res["knn"].items():
        rows.append(
            (
                f"k-NN, bank of {size:,} x {bundle.embedding_dim}: exact / PCA {r['pca_dim']}",
                f"{_ms(r['exact'])} / {_ms(r['pca'])}",
            )
            + ("-",) * (len(models) - 1)
        )
    for mach, q in res.get("projection_quality", {}).items():
        rows.append(
            (
                f"PCA bank on real sound, {mach} ({q['bank_entries']} entries -> {q['projection_dim']})",
                f"clip AUC {100 * q['auc_exact']:.2f} exact, {100 * q['auc_projected']:.2f} projected; window scores' "
                f"rank correlation {q['window_rank_correlation']:.4f}",
            )
            + ("-",) * (len(models) - 1)
        )
    lat = res["latency"]
    if "latency_s" in lat:
        rows.append(
            (
                "alarm latency: anomaly enters ring -> MQTT subscriber",
                f"{lat['latency_s']:.2f} s, of which window + k-of-n wait "
                f"{lat['inherent_s']:.2f} s and processing + delivery {lat['processing_and_delivery_s'] * 1e3:.0f} ms",
            )
            + ("-",) * (len(models) - 1)
        )
    table = (
        "| measure | "
        + " | ".join(names)
        + " |\n|---|"
        + "---|" * len(names)
        + "\n"
        + "\n".join("| " + " | ".join(r) + " |" for r in rows)
    )
    when = sorted({d for d in measured.values()})
    header = (
        f"Measured {', '.join(when)} on {res['machine']} (`python benchmarks/speed.py`)"
        + ("" if len(set(measured.values())) == 1 else f"; parts and dates: {json.dumps(measured)}")
        + ". Both models' rows of one part come from the same run."
    )
    print(header + "\n" + table)
    if a.doc.is_file() and not a.quick:
        text = a.doc.read_text()
        if MARK_BEGIN in text:
            pre, rest = text.split(MARK_BEGIN, 1)
            a.doc.write_text(f"{pre}{MARK_BEGIN}\n{header}\n\n{table}\n{MARK_END}{rest.split(MARK_END, 1)[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
