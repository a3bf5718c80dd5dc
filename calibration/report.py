"""Pictures and files for people: the enrolment score histogram with its threshold, ROC curves,
DCASE submission CSVs, results.json and a markdown table after evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: devices and CI have no display
    import matplotlib.pyplot as plt

    return plt


def plot_enrolment(res, path: Path, machine: str) -> Path:
    """Histogram of leave-one-out enrolment scores per domain, the fitted gamma and the threshold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    scores, doms = res.loo_scores, res.loo_domains
    bins = np.linspace(
        min(scores.min(), res.bank.threshold) - 1e-3, max(scores.max(), res.bank.threshold) * 1.05 + 1e-3, 40
    )
    for d, colour in (("source", "tab:blue"), ("target", "tab:orange")):
        m = doms == d
        if m.any():
            ax.hist(scores[m], bins=bins, density=True, alpha=0.55, color=colour, label=f"{d} windows ({int(m.sum())})")
    xs = np.linspace(bins[0], bins[-1], 300)
    ax.plot(xs, res.fit.pdf(xs), "k-", lw=1.5, label="gamma fit")
    ax.axvline(res.bank.threshold, color="tab:red", ls="--", lw=2, label=f"threshold {res.bank.threshold:.4f}")
    ax.set_xlabel("anomaly score (leave-one-clip-out, cosine distance)")
    ax.set_ylabel("density")
    ax.set_title(f"{machine}: enrolment scores, bank v{res.bank.version}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_roc(r, path: Path) -> Path:
    """ROC curves of one machine: all clips, and per domain when the data has domains."""
    from sklearn.metrics import roc_curve

    plt = _plt()
    y = np.array([c.condition == "anomaly" for c in r.clips])
    doms = np.array([c.domain for c in r.clips])
    fig, ax = plt.subplots(figsize=(5, 5))
    curves = [("all clips", np.ones(len(y), bool))]
    if (doms == "target").any():
        curves += [(f"{d} normals + all anomalies", (doms == d) | y) for d in ("source", "target")]
    for label, m in curves:
        fpr, tpr, _ = roc_curve(y[m], r.scores[m])
        from sklearn.metrics import auc as _auc

        ax.plot(fpr, tpr, label=f"{label} (AUC {100 * _auc(fpr, tpr):.1f})")
    ax.axvspan(0, 0.1, color="grey", alpha=0.15, label="pAUC region (FPR <= 0.1)")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{r.machine}: ROC (h-mean {100 * r.hmean:.2f})")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown_table(summary: dict) -> str:
    lines = [
        "| machine | section | AUC source | AUC target | AUC | pAUC | h-mean | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    f = lambda v: "" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for m, r in summary["machines"].items():
        for sec, s in r["sections"].items():
            lines.append(
                f"| {m} | {sec} | {f(s.get('auc_source'))} | {f(s.get('auc_target'))} | {f(s.get('auc'))} | "
                f"{f(s.get('pauc'))} | "
                f"{f(s.get('hmean'))} | {f(s.get('precision'))} | {f(s.get('recall'))} | {f(s.get('f1'))} |"
            )
    lines.append(f"| **all** | | | | | | **{f(summary['hmean'])}** | | | |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, results, summary: dict) -> None:

    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        write_submission_csvs(out, r)
        plot_roc(r, out / f"roc_{r.machine.replace('/', '_')}.png")
    dump_json(out / "results.json", summary)
    (out / "results.md").write_text(markdown_table(summary))


def write_submission_csvs(out_dir: Path, r) -> list[Path]:
    """DCASE submission files per section: anomaly scores and 0/1 decisions."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    machine = r.machine.replace("/", "_")
    for sec in sorted({c.section for c in r.clips}):
        rows = [(c.path.name, s) for c, s in zip(r.clips, r.scores) if c.section == sec]
        tag = sec if not sec.startswith("id_") else sec[3:]
        a = out_dir / f"anomaly_score_{machine}_section_{tag}_test.csv"
        d = out_dir / f"decision_result_{machine}_section_{tag}_test.csv"
        with open(a, "w", newline="") as f:
            csv.writer(f).writerows((n, f"{s:.6f}") for n, s in rows)
        with open(d, "w", newline="") as f:
            csv.writer(f).writerows((n, int(s > r.threshold)) for n, s in rows)
        written += [a, d]
    return written


def dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n")
