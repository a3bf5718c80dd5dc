"""Speed benchmark of the runtime on this machine. Prints a table, writes JSON, and rewrites the
table between the markers in docs/performance.md.

1. per-window time split into front end, engine and k-NN (median, p95): the default model on ONNX
   Runtime (CPU) versus the same model in PyTorch eager, in one run; real-time factor;
2. peak RSS and CPU % of `edge-agent run` with one machine (real-time replay, hop 1 s);
3. how many streams one process sustains in real time;
4. k-NN time against bank size (1k, 10k, 100k entries);
5. end-to-end alarm latency: first anomalous sample into the ring buffer -> alarm message at a
   subscriber of a real Mosquitto broker, and the part that is not the inherent window/k-of-n wait.

    python benchmarks/speed.py [--quick]
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

from edge_agent.bank import knn_distance  # noqa: E402
from edge_agent.bundle import Bundle  # noqa: E402
from edge_agent.engine import OnnxEngine  # noqa: E402

DEMO = ROOT / "edge_agent" / "demo_clips"
MARK_BEGIN, MARK_END = "<!-- speed-table:begin -->", "<!-- speed-table:end -->"


def stats(xs) -> dict:
    a = np.asarray(xs) * 1e3
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95))}


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_window(bundle: Bundle, n: int, torch_ckpts: list[Path]) -> dict:
    from edge_agent.audio.convert import prepare
    from edge_agent.audio.wavio import read_wav

    fe = bundle.frontend
    x, sr = read_wav(sorted((DEMO / "replay").glob("*.wav"))[0])
    x = prepare(x, sr, fe.sample_rate)
    win = x[None, : fe.window_samples]
    eng = OnnxEngine(bundle, "cpu")
    bank = unit(np.random.default_rng(0).normal(size=(106, bundle.embedding_dim)))  # 16 centres + 90 target windows
    for _ in range(5):
        eng.embed(fe(win))
    t_fe, t_eng, t_knn = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        f = fe(win)
        t1 = time.perf_counter()
        e = eng.embed(f)
        t2 = time.perf_counter()
        knn_distance(e, bank, 1)
        t3 = time.perf_counter()
        t_fe.append(t1 - t0), t_eng.append(t2 - t1), t_knn.append(t3 - t2)
    out = {"frontend": stats(t_fe), "engine_onnxruntime": stats(t_eng), "knn_106": stats(t_knn)}
    total = np.array(t_fe) + np.array(t_eng) + np.array(t_knn)
    out["total_onnxruntime"] = stats(total)
    if torch_ckpts:
        import torch

        from export.onnx_export import load_models

        model = load_models(torch_ckpts)[0].eval()
        feats = fe(win)
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
    out["per_10s_audio_no_overlap_ms"] = out["total_onnxruntime"]["median_ms"] * 10 / fe.window_seconds
    out["real_time_factor_hop_1s"] = out["total_onnxruntime"]["median_ms"] / 1000.0
    return out


def _state_dir_with_bank(tmp: Path, bundle: Bundle, machines: list[str]) -> Path:
    from calibration.service import enrol_paths
    from edge_agent.bank import bank_path

    bank = enrol_paths(sorted((DEMO / "enrol").glob("*.wav")), OnnxEngine(bundle, "cpu"), bundle.frontend.sample_rate)[
        0
    ].bank
    for m in machines:
        bank.save(bank_path(tmp, m))
    return tmp


def bench_process(seconds: float, web: bool = False) -> dict:
    """Peak RSS and CPU of `edge-agent run` with one machine replaying in real time, hop 1 s; with
    ``web``, the status page on and polled every 2 s as its script does."""
    import socket
    import threading
    import urllib.request

    tmp = Path(tempfile.mkdtemp(prefix="speed-"))
    _state_dir_with_bank(tmp, Bundle.load("default"), ["fan01"])
    cfg = tmp / "c.yaml"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg.write_text(
        f"state_dir: {tmp}\nengine: cpu\nmachines:\n  fan01:\n    input: "
        f"{{file: {DEMO / 'replay'}, realtime: true, loop: true}}\n"
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
    return {
        "peak_rss_mb": hwm,
        "rss_mb": rss,
        "cpu_percent_of_one_core": 100 * (c1 - c0) / (t1 - t0),
        "measured_seconds": seconds,
    }


def bench_streams(counts: list[int], seconds: float) -> dict:
    """Streams one process keeps up with: N machines replaying in real time, hop 1 s."""
    from edge_agent.agent import Agent
    from edge_agent.config import parse_config

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
                    m: {"input": {"file": str(DEMO / "replay"), "realtime": True, "loop": True}} for m in machines
                },
            }
        )

        class Null:
            def handle(self, *a):
                pass

            def close(self):
                pass

        agent = Agent.from_config(cfg, [Null()], bundle=bundle, engine=engine)
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


def bench_knn(dim: int, sizes=(1_000, 10_000, 100_000), n=30) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        bank = unit(rng.normal(size=(size, dim)))
        q = unit(rng.normal(size=(1, dim)))
        knn_distance(q, bank, 1)
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            knn_distance(q, bank, 1)
            ts.append(time.perf_counter() - t)
        out[size] = stats(ts)
        del bank
    return out


def bench_latency(repeats: int) -> dict:
    """First anomalous sample into the ring -> alarm message received from a real Mosquitto."""
    sys.path.insert(0, str(ROOT / "tests"))
    from brokers import Broker, Subscriber

    from edge_agent.config import parse_config
    from edge_agent.daemon import build_daemon

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
                "machines": {"fan01": {"input": {"file": str(clips), "realtime": True}}},
                "mqtt": {"host": "127.0.0.1", "port": broker.port, "homeassistant": {"enabled": False}},
            }
        )
        sub = Subscriber(broker.port, "edge-agent/bench/fan01/alarm")
        got: list[float] = []
        sub.c.on_message = lambda c, u, m, got=got: got.append(time.time()) if b'"start"' in m.payload else None
        daemon = build_daemon(cfg, console=False, health=False, bundle=bundle, engine=engine)  # the production wiring
        agent, pub = daemon.agent, daemon.durable
        pub.connected.wait(10)
        raised_at_offset = []
        agent.on_window.append(
            lambda s, w, score, d, out=raised_at_offset: (
                out.append(w.offset) if d is not None and d.kind == "start" else None
            )
        )
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
        "--process-only",
        action="store_true",
        help="only the one-machine process rows (RSS, CPU; status page off and on); writes speed-process.json",
    )
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    a = p.parse_args(argv)
    bundle = Bundle.load("default")
    res = {
        "date": _dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "model": bundle.describe(),
    }
    if not a.process_only:
        print("per-window compute ...", flush=True)
        res["window"] = bench_window(bundle, 30 if a.quick else 200, list(a.ckpts))
        print("k-NN against bank size ...", flush=True)
        res["knn"] = bench_knn(bundle.embedding_dim, n=10 if a.quick else 50)
    print("edge-agent run, one machine ...", flush=True)
    res["process"] = bench_process(10 if a.quick else 30)
    print("edge-agent run, one machine, status page on ...", flush=True)
    res["process_web"] = bench_process(10 if a.quick else 30, web=True)
    if a.process_only:
        for k in ("process", "process_web"):
            print(k, json.dumps(res[k]))
        a.json.with_name("speed-process.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        return 0
    print("streams per process ...", flush=True)
    res["streams"] = bench_streams([4, 8] if a.quick else [8, 16, 32, 48, 64], 12 if a.quick else 20)
    print("alarm latency through Mosquitto ...", flush=True)
    res["latency"] = bench_latency(1 if a.quick else 3)
    w = res["window"]
    sustained = max([n for n, r in res["streams"].items() if r["real_time"]], default=0)
    rows = [
        ("front end per window", f"{w['frontend']['median_ms']:.2f} ms (p95 {w['frontend']['p95_ms']:.2f})"),
        (
            "engine per window, ONNX Runtime CPU",
            f"{w['engine_onnxruntime']['median_ms']:.2f} ms (p95 {w['engine_onnxruntime']['p95_ms']:.2f})",
        ),
    ]
    if "engine_torch_eager" in w:
        rows.append(
            (
                "engine per window, PyTorch eager",
                f"{w['engine_torch_eager']['median_ms']:.2f} ms (p95 {w['engine_torch_eager']['p95_ms']:.2f}); "
                f"ONNX Runtime {w['onnxruntime_speedup_vs_torch']:.2f}x faster",
            )
        )
    rows += [
        ("k-NN per window (106 entries)", f"{w['knn_106']['median_ms']:.3f} ms"),
        (
            f"total per {w['window_seconds']:g} s window",
            f"{w['total_onnxruntime']['median_ms']:.2f} ms (p95 {w['total_onnxruntime']['p95_ms']:.2f})",
        ),
        (
            "compute per 10 s of audio",
            f"{w['per_10s_audio_no_overlap_ms']:.1f} ms without overlap; {w['per_10s_audio_hop_1s_ms']:.1f} ms at "
            "hop 1 s",
        ),
        ("real-time factor, one stream at hop 1 s", f"{w['real_time_factor_hop_1s']:.4f}"),
        ("edge-agent run, one machine: peak RSS", f"{res['process']['peak_rss_mb']:.0f} MB"),
        ("edge-agent run, one machine: CPU", f"{res['process']['cpu_percent_of_one_core']:.1f} % of one core"),
        (
            "edge-agent run, one machine, status page on and polled: peak RSS",
            f"{res['process_web']['peak_rss_mb']:.0f} MB (CPU {res['process_web']['cpu_percent_of_one_core']:.1f} %)",
        ),
        (
            "streams sustained in real time (hop 1 s)",
            f"{sustained}" + (" (the largest count tried)" if sustained == max(res["streams"]) else ""),
        ),
    ]
    for size, s in res["knn"].items():
        rows.append(
            (f"k-NN, bank of {size:,} x {bundle.embedding_dim}", f"{s['median_ms']:.2f} ms (p95 {s['p95_ms']:.2f})")
        )
    lat = res["latency"]
    if "latency_s" in lat:
        rows.append(
            (
                "alarm latency: anomaly enters ring -> MQTT subscriber",
                f"{lat['latency_s']:.2f} s, of which window + k-of-n wait "
                f"{lat['inherent_s']:.2f} s and processing + delivery {lat['processing_and_delivery_s'] * 1e3:.0f} ms",
            )
        )
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    header = (
        f"Measured {res['date']} on {res['machine']} (`python benchmarks/speed.py`), "
        f"model {bundle.name} {bundle.version}."
    )
    print(header + "\n" + table)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    if a.doc.is_file() and not a.quick:
        text = a.doc.read_text()
        if MARK_BEGIN in text:
            pre, rest = text.split(MARK_BEGIN, 1)
            a.doc.write_text(f"{pre}{MARK_BEGIN}\n{header}\n\n{table}\n{MARK_END}{rest.split(MARK_END, 1)[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
