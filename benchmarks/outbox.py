"""Cost of one outbox write (what the scoring thread pays per event) with a backlog of 0, 50k and
99k rows, as a long broker outage leaves it. Prints a table and writes benchmarks/results/outbox.json.

    python benchmarks/outbox.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.publish.outbox import Outbox  # noqa: E402

PAYLOAD = {
    "schema": 1,
    "type": "alarm",
    "event": "start",
    "machine": "fan01",
    "score": 0.21,
    "threshold": 0.08,
    "alarm_id": "a" * 32,
    "event_id": "b" * 32,
    "ts": "2026-11-22T20:00:00.000Z",
}


def measure(backlog: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "outbox.sqlite"
        Outbox(path).close()
        with sqlite3.connect(path) as db:
            db.executemany(
                "INSERT INTO outbox (machine, kind, payload, created) VALUES ('fan01', 'alarm', ?, ?)",
                [(json.dumps(PAYLOAD), time.time())] * backlog,
            )
        ob = Outbox(path, max_rows=1_000_000)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            ob.put("fan01", "alarm", PAYLOAD)
            times.append(time.perf_counter() - t)
        ob.close()
    times.sort()
    return {
        "backlog_rows": backlog,
        "median_ms": 1e3 * statistics.median(times),
        "p95_ms": 1e3 * times[int(0.95 * len(times))],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=200, help="writes timed per backlog size (default 200)")
    a = p.parse_args(argv)
    rows = [measure(n, a.repeats) for n in (0, 50_000, 99_000)]
    print(f"outbox put(), {a.repeats} writes each, synchronous=FULL (one fsync per write), {platform.machine()}")
    print(f"{'backlog rows':>12}  {'median':>9}  {'p95':>9}")
    for r in rows:
        print(f"{r['backlog_rows']:>12}  {r['median_ms']:>7.2f} ms  {r['p95_ms']:>7.2f} ms")
    ratio = rows[-1]["median_ms"] / rows[0]["median_ms"]
    print(f"median at 99k / median at 0: {ratio:.2f}")
    out = ROOT / "benchmarks" / "results" / "outbox.json"
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": platform.machine(),
                "repeats": a.repeats,
                "rows": rows,
                "ratio_99k_to_0": ratio,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
