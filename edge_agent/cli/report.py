"""``report``: a machine's hourly history (trends.sqlite) as a CSV and a plot."""

from __future__ import annotations

import csv
import time
from pathlib import Path


def add_parsers(command) -> None:
    r = command(
        "report",
        help="a machine's history of scores, levels, alarms and states as CSV and a plot",
        description="Write the hourly statistics the running agent keeps (score median and 95th percentile, "
        "threshold, level, alarms, minutes in each state) for one machine since a time ago: a CSV and a PNG "
        "plot, and the machine's severity (watch: the normal score drifting toward the threshold over days).",
    )
    r.add_argument("--machine", required=True, help="machine id, as in the config")
    r.add_argument("--since", default="30d", help="how far back: e.g. 30d, 72h (default 30d)")
    r.add_argument("--config", type=Path, help="config file whose state_dir holds the trends (optional)")
    r.add_argument("--state-dir", type=Path, help="state directory (default: the config's, else the standard rule)")
    r.add_argument("--out", type=Path, default=Path("."), help="folder for <machine>-trends.csv and .png (default .)")
    r.set_defaults(func=cmd_report)


def cmd_report(a) -> int:
    from edge_agent.cli.calibrate import state_dir_of
    from edge_agent.config import load_config, parse_duration
    from edge_agent.errors import UserError
    from edge_agent.state.paths import trends_path
    from edge_agent.trends.severity import severity
    from edge_agent.trends.store import open_existing

    try:
        since = parse_duration(a.since)
    except ValueError as e:
        raise UserError(f"--since: {e}") from None
    cfg = load_config(a.config) if a.config is not None else None
    store = open_existing(trends_path(state_dir_of(a, cfg)))
    now = time.time()
    try:
        hours = store.hours(a.machine, since=now - since)
        known = store.machines()
    finally:
        store.close()
    if not hours:
        raise UserError(
            f"no history of {a.machine!r} in the last {a.since}"
            + (f" (machines with a history: {', '.join(known)})" if known else " (none has one yet)")
        )
    a.out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = a.out / f"{a.machine}-trends.csv", a.out / f"{a.machine}-trends.png"
    states = sorted({k for h in hours for k in h.seconds})
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hour_utc", "windows", "score_median", "score_p95", "threshold", "level_median_dbfs", "alarms"]
                   + [f"minutes_{s}" for s in states])  # fmt: skip
        for h in hours:
            w.writerow(
                [time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(h.hour)), h.windows, _f(h.score_median),
                 _f(h.score_p95), _f(h.threshold), _f(h.level_median, 1), h.alarms]
                + [f"{h.seconds.get(s, 0.0) / 60:.1f}" for s in states]
            )  # fmt: skip
    _plot(hours, a.machine, png_path)
    level, why = severity(hours, int(now - now % 86400))
    alarms = sum(h.alarms for h in hours)
    print(f"{a.machine}: {len(hours)} hours since {a.since} ago, {alarms} alarm(s); severity {level}"
          + (f" ({why})" if why else ""))  # fmt: skip
    print(f"wrote {csv_path} and {png_path}")
    return 0


def _f(x, nd: int = 5) -> str:
    return "" if x is None else f"{x:.{nd}f}"


def _plot(hours, machine: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime, timezone

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    t = [datetime.fromtimestamp(h.hour, timezone.utc) for h in hours]
    fig, (ax, lv) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=[3, 1.4])
    nan = float("nan")
    ax.plot(t, [h.score_median if h.score_median is not None else nan for h in hours], label="score, hourly median")
    ax.plot(t, [h.score_p95 if h.score_p95 is not None else nan for h in hours], alpha=0.5, label="95th percentile")
    ax.plot(t, [h.threshold if h.threshold is not None else nan for h in hours], "r--", label="threshold")
    alarmed = [(ti, h.score_p95 or 0.0) for ti, h in zip(t, hours) if h.alarms]
    if alarmed:
        ax.scatter(*zip(*alarmed), marker="v", color="red", zorder=3, label="hour with an alarm")
    ax.set_ylabel("anomaly score")
    ax.set_title(f"{machine}: hourly history")
    ax.legend(loc="upper left", fontsize=8)
    lv.plot(t, [h.level_median if h.level_median is not None else nan for h in hours], color="gray")
    lv.set_ylabel("level (dBFS)")
    lv.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
