"""Network audio sources: CPU and RSS per source, and whether one agent process keeps N of them
in real time (hop 1 s, every machine calibrated and scored). One server process
(benchmarks/netserve.py) sends the same clip to every client in real time; the
``edge-agent run`` process and its decoders (one ffmpeg per ffmpeg-decoded source) are measured
together: CPU from /proc, memory as PSS (shared libraries split among the processes that map them).

    python benchmarks/network.py                      # table, benchmarks/results/network.json
    python benchmarks/network.py --counts 1 16 --kinds wyoming --seconds 20
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
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed import DEMO, _state_dir_with_bank  # noqa: E402
from edge_agent.model.bundle import Bundle  # noqa: E402

CLIP = DEMO / "replay" / "01_normal_id_00_00000018.wav"
KINDS = {
    "wyoming": lambda port: {"url": f"wyoming://127.0.0.1:{port}"},
    "tcp": lambda port: {"url": f"tcp://127.0.0.1:{port}", "raw": {"format": "s16le", "rate": 16000}},
    "http": lambda port: {"url": f"http://127.0.0.1:{port}/live.mp3"},
}
CLK = os.sysconf("SC_CLK_TCK")


def _cpu_pss(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and proportional set size (MB: shared libraries split among the
    processes that map them, so that N decoders add up honestly) of one process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        pss = next(ln for ln in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines() if ln.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0.0, 0.0
    return (int(stat[11]) + int(stat[12])) / CLK, int(pss.split()[1]) / 1024


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if Path(p, "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                    out.append(int(p.name))
            except OSError:
                continue
    return out


def _windows(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        s.labels["machine"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "edge_agent_windows_processed"
        for s in f.samples
        if s.name.endswith("_total")
    }


def start_agent(tmp: Path, cfg: dict) -> subprocess.Popen:
    """``edge-agent run`` on ``cfg`` (written to tmp/c.yaml), quiet."""
    import yaml

    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from edge_agent.cli import main; sys.exit(main(sys.argv[1:]))",
         "run", "--config", str(tmp / "c.yaml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def write_results(path: Path, **fields) -> None:
    """The JSON a benchmark leaves: the date and the machine first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    path.write_text(json.dumps({"date": _dt.date.today().isoformat(), "machine": machine, **fields}, indent=1))
    print(f"written {path}")


def run(kind: str, n: int, seconds: float, bundle: Bundle) -> dict:
    """``edge-agent run`` with N machines on one server's streams: its CPU and memory with its
    decoders, and whether every machine gets a window a second."""
    from tests.brokers import free_port

    port, mport = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "netserve.py"), kind, str(port), str(CLIP)],
        stdout=subprocess.PIPE,
        text=True,
    )
    server.stdout.readline()
    tmp = Path(tempfile.mkdtemp(prefix="net-"))
    machines = [f"m{i:03d}" for i in range(n)]
    _state_dir_with_bank(tmp, bundle, machines, alarms=False)
    cfg = {
        "state_dir": str(tmp),
        "engine": "cpu",
        "metrics": {"listen": f"127.0.0.1:{mport}"},
        "machines": {m: {"input": KINDS[kind](port)} for m in machines},
    }
    agent = start_agent(tmp, cfg)
    try:
        time.sleep(8.0 + n / 16)  # start-up, connections, first windows
        procs = [agent.pid, *_children(agent.pid)]
        decoders = len(procs) - 1
        cpu0 = sum(_cpu_pss(p)[0] for p in procs)
        w0 = _windows(mport)
        t0 = time.monotonic()
        peak = 0.0
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            peak = max(peak, sum(_cpu_pss(p)[1] for p in procs))
        took = time.monotonic() - t0
        cpu = sum(_cpu_pss(p)[0] for p in procs) - cpu0
        agent_pss = _cpu_pss(agent.pid)[1]
        w1 = _windows(mport)
    finally:
        agent.terminate()
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        server.kill()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    got = min(w1.get(m, 0) - w0.get(m, 0) for m in machines)
    return {
        "kind": kind,
        "sources": n,
        "seconds": round(took, 1),
        "cpu_percent_of_a_core": round(100 * cpu / took, 1),
        "cpu_percent_per_source": round(100 * cpu / took / n, 2),
        "peak_pss_mb": round(peak, 1),
        "agent_pss_mb": round(agent_pss, 1),
        "decoders": decoders,
        "min_windows": int(got),
        "real_time": bool(got >= 0.9 * took),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--counts", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run (after 8 s of warm-up)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "network.json")
    a = p.parse_args(argv)
    bundle = Bundle.load("default")
    rows = []
    print("| input | sources | CPU (% of one core) | per source | memory (PSS, agent + decoders) | "
          "of it the agent | real time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for kind in a.kinds:
        for n in a.counts:
            r = run(kind, n, a.seconds, bundle)
            rows.append(r)
            print(
                f"| {kind} | {n} | {r['cpu_percent_of_a_core']} % | {r['cpu_percent_per_source']} % | "
                f"{r['peak_pss_mb']} MB | {r['agent_pss_mb']} MB | "
                f"{'yes' if r['real_time'] else 'NO'} (at least {r['min_windows']} windows per machine in "
                f"{r['seconds']} s) |",
                flush=True,
            )
    write_results(a.out, model=bundle.describe(), rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
