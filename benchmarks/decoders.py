"""Decoding network streams: an ffmpeg child per source (what the agent does) against PyAV in the
agent's process (the alternative), on the same N HTTP MP3 streams in real time from one server
(benchmarks/netserve.py). Only the decoding is measured: each stream decoded and resampled to
16 kHz mono float32, for ``--seconds``; CPU from /proc, memory as PSS (the ffmpeg children's
shared libraries split among them). PyAV is not a dependency of the project: ``pip install av``.

    python benchmarks/decoders.py            # table, benchmarks/results/decoders.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.network import CLIP, _cpu_pss, write_results  # noqa: E402
from edge_agent.audio.ffmpeg import ffmpeg_command  # noqa: E402


def _ffmpeg_children(url: str, n: int, seconds: float) -> tuple[float, float, float]:
    """CPU (share of a core) and peak PSS of N decoders as the agent runs them (the same command
    line), and the fewest seconds of audio one of them delivered."""
    procs = [
        subprocess.Popen(ffmpeg_command(url, 16000, "mix"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(n)
    ]
    stop = threading.Event()
    got = [0] * n  # bytes of float32 frames from each decoder

    def drain(i, p):
        while not stop.is_set() and (b := p.stdout.read(6400)):
            got[i] += len(b)

    threads = [threading.Thread(target=drain, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    pids = [p.pid for p in procs]
    cpu0 = sum(_cpu_pss(p)[0] for p in pids)
    peak, t0 = 0.0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        peak = max(peak, sum(_cpu_pss(p)[1] for p in pids))
    cpu = sum(_cpu_pss(p)[0] for p in pids) - cpu0
    took = time.monotonic() - t0
    stop.set()
    for p in procs:
        p.kill()
        p.wait(10)
    return cpu / took, peak, min(got) / (4 * 16000)


_PYAV_CHILD = """
import sys, threading, time, av
url, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
stop = threading.Event()
decoded = [0] * n
def decode(i):
    c = av.open(url, options={"rw_timeout": "10000000"})
    r = av.AudioResampler(format="flt", layout="mono", rate=16000)
    for packet in c.demux(audio=0):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:  # a damaged frame: skipped, as the ffmpeg CLI does
            continue
        for frame in frames:
            for f in r.resample(frame):
                decoded[i] += f.to_ndarray().shape[-1]
        if stop.is_set():
            break
    c.close()
ts = [threading.Thread(target=decode, args=(i,), daemon=True) for i in range(n)]
for t in ts: t.start()
print("ready", flush=True)
time.sleep(3.0 + seconds + 2.0)
stop.set()
print(min(decoded) / 16000, flush=True)
"""


def _pyav(url: str, n: int, seconds: float) -> tuple[float, float, float, float]:
    """CPU seconds and peak PSS of one process decoding N streams with PyAV in threads, and the PSS
    of that process before the streams (the interpreter and PyAV's libraries)."""
    p = subprocess.Popen([sys.executable, "-c", _PYAV_CHILD, url, str(n), str(seconds)], stdout=subprocess.PIPE)
    p.stdout.readline()
    base = _cpu_pss(p.pid)[1]
    time.sleep(3.0)
    cpu0, t0, peak = _cpu_pss(p.pid)[0], time.monotonic(), 0.0
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        peak = max(peak, _cpu_pss(p.pid)[1])
    cpu = _cpu_pss(p.pid)[0] - cpu0
    took = time.monotonic() - t0
    decoded = float(p.stdout.readline() or 0)
    p.wait(30)
    return cpu / took, peak, base, decoded


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", nargs="+", type=int, default=[1, 16])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decoders.json")
    a = p.parse_args(argv)
    from tests.brokers import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "netserve.py"), "http", str(port), str(CLIP)],
        stdout=subprocess.PIPE,
        text=True,
    )
    server.stdout.readline()
    url = f"http://127.0.0.1:{port}/live.mp3"
    rows = []
    print("| decoder | streams | CPU (% of one core) | per stream | memory (PSS) | per stream | audio per stream |")
    print("|---|---|---|---|---|---|---|")
    try:
        for n in a.counts:
            cpu, pss, sec = _ffmpeg_children(url, n, a.seconds)
            rows.append({"decoder": "ffmpeg child per stream", "streams": n, "cpu": cpu, "pss_mb": pss, "audio_s": sec})
            cpu_av, pss_av, base, sec = _pyav(url, n, a.seconds)
            rows.append(
                {"decoder": "PyAV in one process", "streams": n, "cpu": cpu_av, "pss_mb": pss_av, "base_mb": base,
                 "audio_s": sec}
            )  # fmt: skip
            for r in rows[-2:]:
                extra = r["pss_mb"] - r.get("base_mb", 0.0)
                print(
                    f"| {r['decoder']} | {n} | {100 * r['cpu']:.1f} % | {100 * r['cpu'] / n:.2f} % | "
                    f"{r['pss_mb']:.1f} MB | {extra / n:.1f} MB | at least {r['audio_s']:.0f} s |",
                    flush=True,
                )
    finally:
        server.kill()
        server.wait(10)
    write_results(a.out, seconds=a.seconds, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
