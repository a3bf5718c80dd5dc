"""The calibration summary printed by ``calibrate`` and ``bank show``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edge_agent.scoring.bank import MemoryBank
from edge_agent.scoring.heads import describe


def summary_table(machine: str, bank: MemoryBank, path: Path, plot: Optional[Path] = None) -> str:
    m = bank.meta
    fit = m.get("fit", {})
    rule = m.get("threshold_rule", {})
    c = bank.counts()
    rows = [
        ("machine", machine),
        ("bank", str(path)),
        ("bank version", str(bank.version)),
        ("model", f"{bank.model_name} {bank.model_version} (sha256 {bank.model_sha256[:12]}...)"),
        (
            "entries",
            f"source centres {c['source_centre']}, source samples {c['source_sample']}, target samples "
            f"{c['target_sample']}",
        ),
        ("enrolled windows", ", ".join(f"{k} {v}" for k, v in m.get("enrolled_windows", {}).items())),
        ("enrolled clips", ", ".join(f"{k} {v}" for k, v in m.get("enrolled_clips", {}).items())),
        (
            "threshold",
            f"{bank.threshold:.5f} ("
            + (
                f"budget of {7 * rule['value']:.3g} false alarms a week"
                if rule.get("rule") == "false_alarms_per_day"
                else f"{rule.get('rule')} {rule.get('value')}"
            )
            + ")",
        ),
        (
            "gamma fit",
            f"shape {fit.get('shape', float('nan')):.3f} loc {fit.get('loc', float('nan')):.4f} scale "
            f"{fit.get('scale', float('nan')):.4f}",
        ),
        ("score", describe(m.get("score"), bank.k)),
        ("domain normalisation", "on" if bank.normalise_domains else "off"),
        (
            "enrolled level",
            (
                f"{m['levels_dbfs']['low']:.1f} to {m['levels_dbfs']['high']:.1f} dBFS (1st-99th percentile of "
                f"{m['levels_dbfs']['windows']} windows); far below it the machine counts as off"
            )
            if m.get("levels_dbfs")
            else "not recorded (calibrated by an older version): no 'off' state",
        ),
        ("expected false alarms", expected_line(m)),
        ("calibrated", m.get("created", "?")),
    ]
    if plot:
        rows.append(("plot", str(plot)))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def expected_line(m: dict) -> str:
    """The predicted false-alarm rate with its interval and what it rests on."""
    rule, info = m.get("threshold_rule", {}), m.get("alarm_rate", {})
    line = f"{m.get('expected_alarms_per_day', float('nan')):.3g} per day"
    if "per_day_ci" in info:
        lo, hi = info["per_day_ci"]
        line += (
            f" (95 % interval {lo:.3g} to {hi:.3g}; the alarm rule run over {info['clips']} held-out clips, "
            f"{60 * info['hours']:.0f} min of audio, extreme-value tail)"
        )
    else:
        line += f" ({info.get('method', 'windows taken as independent')})"
    smooth = (
        f", {rule.get('smooth', 'median')} of {rule.get('smooth_windows', 1)} windows"
        if rule.get("smooth_windows", 1) > 1
        else ""
    )
    return (
        line
        + f"; hop {rule.get('hop_seconds')} s{smooth}, raise after {rule.get('raise_after')} of {rule.get('of_last')}"
    )
