"""``edge-agent calibrate`` and ``edge-agent bank show``.

Audio comes from files (``--from``: WAV files or folders, DCASE layout or plain) or is recorded
live from the machine's configured input (``--seconds``). Clips that cannot be used are listed with
the reason and skipped; the command fails (exit 2) only when too few usable windows remain.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edge_agent.bank import MemoryBank, bank_path
from edge_agent.bundle import Bundle
from edge_agent.config import Config, check_machine_id, load_config
from edge_agent.dataset import LabelError, parse_path
from edge_agent.audio.wavio import iter_wavs
from edge_agent.embedding import infer_signal
from edge_agent.engine import open_engine
from edge_agent.errors import UserError
from edge_agent.audio.convert import level_dbfs, prepare, SILENT_PEAK, window_levels
from edge_agent.scoring import CLASS_HEADS, ScoreError, bundle_heads, default_score, describe, head_scores, parse_score
from edge_agent.audio.wavio import AudioFileError, read_wav

from .enrol import EnrolResult, Enrolment, ThresholdPolicy, enrol, use_heads
from .vetting import Outlier, outlier_clips

MIN_WINDOWS = 5
CLIPPED_FRACTION = 0.01  # more than 1 % of samples at full scale
LIVE_CHUNK_SECONDS = 5.0  # live recordings are split into chunks that act as clips for leave-one-out


class CalibrationError(UserError):
    """Not enough usable audio; exit code 2."""


@dataclass
class ClipCheck:
    path: Path
    ok: bool
    reason: str = ""
    domain: str = "source"
    audio: Optional[np.ndarray] = None  # mono at the model's rate


def check_clip(path: Path, model_rate: int, window_seconds: float, channel="mix", domain: Optional[str] = None) -> ClipCheck:
    """Read and vet one clip: unreadable, silent, clipped or too short clips are refused with the reason."""
    try:
        x, sr = read_wav(path)
    except AudioFileError as e:
        return ClipCheck(path, False, str(e).split(": ", 1)[-1])
    seconds = x.shape[0] / sr
    if seconds + 1e-6 < window_seconds:
        return ClipCheck(path, False, f"too short: {seconds:.2f} s, the model needs windows of {window_seconds:g} s")
    peak = float(np.abs(x).max())
    if peak < SILENT_PEAK:
        return ClipCheck(path, False, "silent (digital silence or a muted input)")
    clipped = float(np.mean(np.abs(x) >= 0.999))
    if clipped > CLIPPED_FRACTION:
        return ClipCheck(path, False, f"clipped: {100 * clipped:.1f} % of samples at full scale (lower the input gain)")
    if domain is None:
        try:
            domain = "target" if parse_path(path).domain == "target" else "source"
        except LabelError:
            domain = "source"
    try:
        mono = prepare(x, sr, model_rate, channel)
    except ValueError as e:
        return ClipCheck(path, False, str(e))
    return ClipCheck(path, True, domain=domain, audio=mono)


def embed_piece(engine, fe, x: np.ndarray, hop_samples: int):
    """Embeddings of a signal's windows, one row per embedding, and all the model's outputs per window."""
    out = infer_signal(engine, fe, x, hop_samples)
    return split_embeddings(engine, out["embedding"]), out


def resolve_class(bundle, head: str, name: Optional[str]) -> tuple[str, int]:
    """The class of a machine the model was trained on (``group|section``) for a head that needs one."""
    classes = bundle_heads(bundle.manifest).get(head, {}).get("classes", [])
    if head == "classifier" and len(classes) < 2:
        raise CalibrationError(f"--score classifier: model {bundle.name} was trained on one class only, so its classifier score is always 0; use --score knn")
    if name is None:
        raise CalibrationError(f"--score {head} needs the machine's class in the model: --class NAME, one of {', '.join(classes)}; "
                               "for a machine the model was not trained on, use a head without a class (--score knn, or rec-kld for clvae)")
    if name not in classes:
        raise CalibrationError(f"--class {name!r} is not one of the model's classes: {', '.join(classes)}")
    return name, classes.index(name)


def score_members(bundle, score: Optional[str], class_name: Optional[str] = None) -> list[dict]:
    """The score heads a calibration asks for (``--score``, default: the bundle's own), checked
    against the bundle and with their class resolved."""
    heads = bundle_heads(bundle.manifest)
    try:
        kinds = parse_score(score or default_score(bundle.manifest))
    except ScoreError as e:
        raise CalibrationError(str(e)) from None
    members = []
    for kind in kinds:
        if kind not in heads:
            raise CalibrationError(f"--score {kind}: model {bundle.name} has no {kind} head (it has: {', '.join(heads)})")
        m: dict = {"kind": kind}
        if kind in CLASS_HEADS:
            m["class"], m["class_index"] = resolve_class(bundle, kind, class_name)
        if "weight" in heads[kind]:
            m["weight"] = float(heads[kind]["weight"])
        members.append(m)
    return members


def embed_files(paths, engine, fe, hop_samples: int, channel="mix", domain: Optional[str] = None, desc: str = "enrolling",
                progress: bool = True, outputs_out: Optional[dict] = None, levels_out: Optional[list] = None
                ) -> tuple[dict[str, tuple[list, list]], list[tuple[Path, str]]]:
    """Vet and embed normal clips: {domain: (embedding arrays, clip id per window)}, skipped (path, reason).
    With ``outputs_out``, every clip's model outputs are appended to ``outputs_out[domain]``; with
    ``levels_out``, every clip's window levels (dBFS)."""
    from tqdm import tqdm

    files = list(iter_wavs(paths))
    if not files:
        raise CalibrationError(f"no WAV files in {', '.join(map(str, paths))}")
    per_domain: dict[str, tuple[list, list]] = {}
    skipped: list[tuple[Path, str]] = []
    for f in tqdm(files, desc=desc, unit="clip", file=sys.stderr, disable=not progress):
        try:
            if parse_path(f).condition == "anomaly":
                skipped.append((f, "labelled anomalous in its file name; only normal sound is enrolled"))
                continue
        except LabelError:
            pass
        c = check_clip(f, fe.sample_rate, fe.window_seconds, channel, domain)
        if not c.ok:
            skipped.append((f, c.reason))
            continue
        e, out = embed_piece(engine, fe, c.audio, hop_samples)
        if outputs_out is not None:
            outputs_out.setdefault(c.domain, []).append(out)
        if levels_out is not None:
            levels_out.append(window_levels(c.audio, fe.window_samples, hop_samples))
        per_domain.setdefault(c.domain, ([], []))
        per_domain[c.domain][0].append(e)
        per_domain[c.domain][1].extend([str(f)] * len(e))
    return per_domain, skipped


def knn_only(members: list[dict]) -> bool:
    """The plain k-NN needs nothing but the bank; other heads need the model's outputs per window."""
    return [m["kind"] for m in members] == ["knn"]


def apply_score(res: EnrolResult, members: list[dict], outputs: dict[str, list[dict]], policy: ThresholdPolicy,
                fresh: bool, per_window: int) -> None:
    """Give a new bank the asked score head(s) and refit its threshold on the enrolled windows'
    scores under that head. ``outputs``: this enrolment's model outputs per domain, in enrolment order."""
    if knn_only(members):
        return
    order = [d for d in ("source", "target") if outputs.get(d)]
    keys = outputs[order[0]][0].keys()
    outs = {k: np.concatenate([o[k] for d in order for o in outputs[d]]) for k in keys}
    domains = np.concatenate([[d] * sum(len(o["embedding"]) for o in outputs[d]) for d in order])
    scores = []
    for m in members:
        if m["kind"] == "knn":
            # the k-NN member's enrolment scores are the leave-one-clip-out distances, which line up
            # with this enrolment's windows only when the bank holds nothing else
            if not fresh:
                raise CalibrationError("an ensemble with knn is fitted on a new bank only; add --replace")
            if per_window != 1 or len(res.loo_scores) != len(domains):
                raise CalibrationError("an ensemble with knn needs a model with one embedding per window")
            scores.append(res.loo_scores)
        else:
            scores.append(head_scores(m, outs))
    if not fresh:
        res.notes.append(f"the {'+'.join(m['kind'] for m in members)} threshold is fitted on this enrolment's windows only")
    try:
        use_heads(res, members, scores, domains, policy)
    except ValueError as e:
        raise CalibrationError(f"--score: {e}") from None


def split_embeddings(engine, emb):
    """(windows, n * dim) -> (windows * n, dim): every embedding of a frame-sequence model is its
    own bank entry (the paper's memory bank of context-window embeddings)."""
    dim = engine.bundle.embedding_dim
    return emb.reshape(-1, dim)


def to_enrolments(per_domain: dict[str, tuple[list, list]]) -> dict[str, Enrolment]:
    return {d: Enrolment(np.concatenate(v[0]), np.array(v[1]), d) for d, v in per_domain.items()}


def enrol_paths(paths, engine, hop_samples: int, channel="mix", progress: bool = False, score: Optional[str] = None,
                class_name: Optional[str] = None, **enrol_args):
    """Vet, embed and enrol normal clips into a new bank with the asked score head, as ``calibrate
    --from`` does (used by evaluate, the demo and the benchmarks). Returns (EnrolResult, skipped clips)."""
    bundle = engine.bundle
    members = score_members(bundle, score, class_name)
    outputs: dict[str, list[dict]] = {}
    levels: list = []
    per_domain, skipped = embed_files(paths, engine, bundle.frontend, hop_samples, channel, progress=progress,
                                      outputs_out=None if knn_only(members) else outputs, levels_out=levels)
    if not per_domain:
        raise CalibrationError("no usable normal clips to enrol")
    enr = to_enrolments(per_domain)
    res = enrol(bundle.sha256, enr.get("source"), enr.get("target"), model_name=bundle.name, model_version=bundle.version, **enrol_args)
    apply_score(res, members, outputs, enrol_args.get("policy", ThresholdPolicy()), True, bundle.embeddings_per_window)
    res.bank.meta["levels_dbfs"] = level_range(levels)
    return res, skipped


def resolve_setup(a) -> tuple[Optional[Config], Bundle, Path]:
    cfg = None
    if a.config is not None or a.seconds is not None:
        cfg = load_config(a.config)
    model = a.model or (cfg.model if cfg else "default")
    bundle = Bundle.load(model)
    state_dir = a.state_dir or (cfg.resolved_state_dir() if cfg else None)
    if state_dir is None:
        from edge_agent.config import default_state_dir

        state_dir = default_state_dir()
    return cfg, bundle, Path(state_dir)


def record_live(cfg: Config, machine: str, seconds: float, model_rate: int, out=sys.stderr) -> np.ndarray:
    """Record from the machine's configured input with a progress bar and a level meter."""
    from tqdm import tqdm

    from edge_agent.audio import open_source

    if machine not in cfg.machines:
        raise CalibrationError(f"machine {machine!r} is not in the config (machines: {', '.join(cfg.machines) or 'none'}); "
                               "add it with its input, or use --from with WAV files")
    mc = cfg.machines[machine]
    src = open_source(machine, mc, model_rate)
    src.start()
    chunks, got, rate = [], 0, None
    bar = tqdm(total=round(seconds, 1), desc=f"recording {machine}", unit="s", file=out, bar_format="{l_bar}{bar}| {n:.1f}/{total} s {postfix}")
    t_end = time.monotonic() + seconds + 30.0  # a dead input must not hang calibration
    try:
        while got < seconds and time.monotonic() < t_end:
            src.ring.wait(0.2)
            frames = src.ring.read()
            if not len(frames):
                if src.error:
                    bar.set_postfix_str(f"input problem: {src.error}")
                continue
            rate = src.sample_rate
            chunks.append(prepare(frames, rate, model_rate, mc.input.channel))
            got += len(frames) / rate
            db = level_dbfs(frames)
            meter = "#" * int(max(0, min(30, (db + 90) / 3)))
            bar.set_postfix_str(f"level {db:6.1f} dBFS {meter:<30}" + ("  SILENT - is the microphone muted?" if db < -80 else ""))
            bar.update(min(len(frames) / rate, seconds - bar.n))
            if src.finished:
                break
    finally:
        bar.close()
        src.stop()
    if not chunks:
        raise CalibrationError(f"no audio arrived from the input of {machine} ({src.error or 'nothing delivered'}); check 'edge-agent devices'")
    return np.concatenate(chunks)


def _machine_arg(name: str) -> str:
    try:
        return check_machine_id(name)
    except ValueError as e:
        raise CalibrationError(f"--machine: {e}") from None


def level_range(levels: list, existing: Optional[dict] = None) -> Optional[dict]:
    """The enrolled windows' level range (dBFS), joined with an earlier enrolment's: the runtime
    calls a window far below ``low`` a stopped machine (``off``) rather than scoring it."""
    x = np.concatenate(levels) if levels else np.zeros(0)
    if not len(x):
        return existing
    r = {"low": float(np.percentile(x, 1)), "median": float(np.median(x)), "high": float(np.percentile(x, 99)), "windows": int(len(x))}
    if existing:
        r = {"low": min(r["low"], existing["low"]), "median": r["median"], "high": max(r["high"], existing["high"]),
             "windows": r["windows"] + int(existing.get("windows", 0))}
    return r


def threshold_policy(percentile: Optional[float], false_alarms_per_day: Optional[float], hop: float,
                     alarm=None, false_alarms_per_week: Optional[float] = None) -> ThresholdPolicy:
    """The threshold rule calibrate applies (also used by the benchmarks): the asked percentile (the
    DCASE convention) or false-alarm budget, else the machine's budget (``alarm.false_alarms_per_week``,
    1 a week), always with the machine's hop, smoothing and raise rule."""
    from edge_agent.config import AlarmConfig

    alarm = alarm or AlarmConfig()
    if percentile is None and false_alarms_per_day is None:
        false_alarms_per_day = (false_alarms_per_week or alarm.false_alarms_per_week) / 7
    return ThresholdPolicy(percentile=percentile, false_alarms_per_day=None if percentile is not None else false_alarms_per_day,
                           hop_seconds=hop, raise_after=alarm.raise_after, of_last=alarm.of_last,
                           smooth_windows=alarm.smooth_windows(hop), smooth=alarm.smooth)


def exclude_outliers(per_domain: dict[str, tuple[list, list]], outputs: dict[str, list[dict]], keep: bool
                     ) -> list[tuple[str, Outlier]]:
    """Find the clips of each domain that sound unlike the rest and, unless ``keep``, take them
    (embeddings and model outputs) out of the enrolment. Returns (domain, outlier) pairs."""
    found = []
    for d, (embs, groups) in list(per_domain.items()):
        outl = outlier_clips(np.concatenate(embs), np.array(groups))
        found += [(d, o) for o in outl]
        if keep or not outl:
            continue
        bad = {o.clip for o in outl}
        starts = np.cumsum([0] + [len(e) for e in embs[:-1]])  # each clip's first window
        kept = [i for i, st in enumerate(starts) if groups[st] not in bad]
        per_domain[d] = ([embs[i] for i in kept], [g for g in groups if g not in bad])
        if d in outputs:
            outputs[d] = [outputs[d][i] for i in kept]
    return found


def request_learn(a) -> int:
    from edge_agent.config import default_state_dir, parse_duration

    from .learning import request_learning

    try:
        seconds = parse_duration(a.learn)
    except ValueError as e:
        raise CalibrationError(f"--learn: {e}") from None
    cfg = load_config(a.config) if a.config else None
    state_dir = a.state_dir or (cfg.resolved_state_dir() if cfg else default_state_dir())
    path = request_learning(Path(state_dir), a.machine, seconds)
    print(f"learning requested for {a.machine}: {a.learn} of its own sound ({path}). The running agent starts it at its next "
          f"start or reload (systemctl reload edge-agent); until it is over the machine is 'learning' and raises no alarms.")
    return 0


def calibrate_command(a) -> int:
    _machine_arg(a.machine)
    if a.learn:
        return request_learn(a)
    if a.seconds is None and not a.from_paths:
        raise CalibrationError("say where the normal sound comes from: --seconds N (record from the configured input), --from PATH... "
                               "or --learn DURATION (the running agent learns from its own sound)")
    cfg, bundle, state_dir = resolve_setup(a)
    mc = cfg.machines.get(a.machine) if cfg else None
    hop = a.hop or (mc.hop_seconds if mc else 1.0)
    fe = bundle.frontend
    engine = open_engine(bundle, cfg.engine if cfg else "auto")
    hop_samples = max(1, int(round(hop * fe.sample_rate)))
    per_domain: dict[str, tuple[list, list]] = {}
    skipped: list[tuple[Path, str]] = []
    members = score_members(bundle, a.score, a.class_name)
    outputs: dict[str, list[dict]] = {}
    levels: list = []
    if a.from_paths:
        for p in a.from_paths:
            if not p.exists():
                raise CalibrationError(f"--from {p}: no such file or folder")
        channel = mc.input.channel if mc else "mix"
        per_domain, skipped = embed_files(a.from_paths, engine, fe, hop_samples, channel, a.domain, f"enrolling {a.machine}",
                                          outputs_out=None if knn_only(members) else outputs, levels_out=levels)
    else:
        x = record_live(cfg, a.machine, a.seconds, fe.sample_rate)
        domain = a.domain or "source"
        chunk = int(LIVE_CHUNK_SECONDS * fe.sample_rate)
        embs, groups = [], []
        for i, s in enumerate(range(0, len(x), chunk)):
            piece = x[s : s + chunk]
            if len(piece) < fe.window_samples:
                if embs:
                    break
                piece = x  # a recording shorter than one chunk is one group
            if float(np.abs(piece).max()) < SILENT_PEAK:
                skipped.append((Path(f"recording[{s / fe.sample_rate:.0f}s]"), "silent (digital silence or a muted input)"))
                continue
            e, out = embed_piece(engine, fe, piece, hop_samples)
            if not knn_only(members):
                outputs.setdefault(domain, []).append(out)
            levels.append(window_levels(piece, fe.window_samples, hop_samples))
            embs.append(e)
            groups.extend([f"chunk{i}"] * len(e))
        if embs:
            per_domain[domain] = (embs, groups)
    for p, why in skipped:
        print(f"skipped {p}: {why}", file=sys.stderr)
    outliers = exclude_outliers(per_domain, outputs, a.keep_outliers)
    for d, o in outliers:
        what = "kept (--keep-outliers)" if a.keep_outliers else "excluded"
        print(f"{what} {o.clip}: it sounds unlike the other {d} clips (distance {o.distance:.3f} to them; the others are "
              f"within {o.typical:.3f}): noise, another machine or a fault?"
              + ("" if a.keep_outliers else " If it is normal sound of this machine, enrol it anyway with --keep-outliers"),
              file=sys.stderr)
    n_windows = sum(len(g) for _, g in per_domain.values())
    if n_windows < MIN_WINDOWS:
        raise CalibrationError(
            f"only {n_windows} usable windows of {fe.window_seconds:g} s (need at least {MIN_WINDOWS}); "
            f"give more normal audio (e.g. --seconds {int(MIN_WINDOWS * hop + fe.window_seconds) + 1}) or fix the clips listed above"
        )
    enr = to_enrolments(per_domain)
    path = bank_path(state_dir, a.machine)
    existing = None
    if path.exists() and not a.replace:
        existing = MemoryBank.load(path)
        existing.check_model(bundle.sha256, f"of machine {a.machine}")
    policy = threshold_policy(a.percentile, a.false_alarms_per_day, hop, mc.alarm if mc else None, a.false_alarms_per_week)
    try:
        res = enrol(bundle.sha256, enr.get("source"), enr.get("target"), existing=existing, replace=a.replace,
                    n_centres=a.centres, keep_source_samples=a.keep_source_samples, k=mc.k if mc else 1,
                    normalise_domains=a.normalise_domains, policy=policy, model_name=bundle.name, model_version=bundle.version)
    except ValueError as e:
        raise CalibrationError(str(e)) from None
    apply_score(res, members, outputs, policy, existing is None or a.replace, bundle.embeddings_per_window)
    res.bank.meta["skipped_clips"] = len(skipped)
    res.bank.meta["levels_dbfs"] = level_range(levels, existing.meta.get("levels_dbfs") if existing is not None else None)
    res.bank.meta["outlier_clips"] = {"excluded" if not a.keep_outliers else "kept": [o.clip for _, o in outliers]}
    res.bank.save(path)
    plot = None
    if a.plot:
        from .report import plot_enrolment

        plot = plot_enrolment(res, path.with_name("calibration.png"), a.machine)
    for n in res.notes:
        print(f"note: {n}")
    print(summary_table(a.machine, res.bank, path, plot))
    info = res.bank.meta.get("alarm_rate", {})
    if info.get("note"):
        print(f"warning: {info['note']}")
    if policy.percentile is not None and res.expected_alarms_per_day > 1.0:
        print(f"warning: with this threshold about {res.expected_alarms_per_day:.0f} false alarms a day are expected on normal sound "
              f"(the {100 * policy.percentile:g}th percentile is the DCASE convention, not an alarm budget); "
              "for live monitoring leave --percentile out (default: 1 false alarm a week)")
    return 0


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
        ("entries", f"source centres {c['source_centre']}, source samples {c['source_sample']}, target samples {c['target_sample']}"),
        ("enrolled windows", ", ".join(f"{k} {v}" for k, v in m.get("enrolled_windows", {}).items())),
        ("enrolled clips", ", ".join(f"{k} {v}" for k, v in m.get("enrolled_clips", {}).items())),
        ("threshold", f"{bank.threshold:.5f} (" + (f"budget of {7 * rule['value']:.3g} false alarms a week"
                                                    if rule.get("rule") == "false_alarms_per_day" else f"{rule.get('rule')} {rule.get('value')}") + ")"),
        ("gamma fit", f"shape {fit.get('shape', float('nan')):.3f} loc {fit.get('loc', float('nan')):.4f} scale {fit.get('scale', float('nan')):.4f}"),
        ("score", describe(m.get("score"), bank.k)),
        ("domain normalisation", "on" if bank.normalise_domains else "off"),
        ("enrolled level", (f"{m['levels_dbfs']['low']:.1f} to {m['levels_dbfs']['high']:.1f} dBFS (1st-99th percentile of "
                            f"{m['levels_dbfs']['windows']} windows); far below it the machine counts as off")
                           if m.get("levels_dbfs") else "not recorded (calibrated by an older version): no 'off' state"),
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
        line += (f" (95 % interval {lo:.3g} to {hi:.3g}; the alarm rule run over {info['clips']} held-out clips, "
                 f"{60 * info['hours']:.0f} min of audio, extreme-value tail)")
    else:
        line += f" ({info.get('method', 'windows taken as independent')})"
    smooth = f", {rule.get('smooth', 'median')} of {rule.get('smooth_windows', 1)} windows" if rule.get("smooth_windows", 1) > 1 else ""
    return line + f"; hop {rule.get('hop_seconds')} s{smooth}, raise after {rule.get('raise_after')} of {rule.get('of_last')}"


def show_bank(a) -> int:
    _machine_arg(a.machine)
    cfg = load_config(a.config) if a.config else None
    from edge_agent.config import default_state_dir

    state_dir = a.state_dir or (cfg.resolved_state_dir() if cfg else default_state_dir())
    path = bank_path(Path(state_dir), a.machine)
    bank = MemoryBank.load(path)
    plot = path.with_name("calibration.png")
    print(summary_table(a.machine, bank, path, plot if plot.exists() else None))
    return 0
