"""``calibrate`` and ``bank show``: the calibration library (``calibration.service``)
behind a command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import edge_agent.cli.adapt as adapt_cli
from edge_agent.cli.adapt import add_options as adapt_options
from edge_agent.cli.common import UsageError, help_of
from edge_agent.config import Config, check_machine_id, default_state_dir, load_config, parse_duration, usable_state_dir
from edge_agent.model.bundle import Bundle
from edge_agent.scoring.bank import MemoryBank, bank_path
from edge_agent.state.paths import model_dir

SCORE_HELP = (
    "score head (default: the bundle's own, k-NN for most): knn (distance to the bank, any machine); classifier "
    "(1 - softmax(logits)[--class], stgram/sepstgram); rec-kld (VAE reconstruction + KL, clvae, any machine); "
    "rec-kld-center (+ lambda x center-loss distance, clvae, --class); indicators (level, crest factor and "
    "kurtosis of the sound against the enrolled windows', no model, any machine: for faults that change how loud "
    "or how impulsive a machine sounds); join heads with '+' for an ensemble of z-normalised scores, e.g. "
    "knn+indicators, rec-kld+rec-kld-center or knn+rec-kld"
)


def add_parsers(command, common) -> None:
    c = command(
        "calibrate",
        help="enrol normal sound of a machine and set its alarm threshold",
        description="Record (or read) normal sound of one machine, add its embeddings to the machine's memory bank "
        "and fit the alarm threshold. Run it again with --domain target after a change of operating condition.",
    )
    c.add_argument("--machine", required=True, help="machine id (a name: letters, digits, _ . -)")
    c.add_argument("--config", type=Path, help="config file (needed for live recording; optional with --from)")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--seconds", type=float, help="record this many seconds from the machine's configured input")
    src.add_argument(
        "--from",
        dest="from_paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="WAV files or folders (DCASE layout or plain)",
    )
    src.add_argument(
        "--learn",
        metavar="DURATION",
        default=None,
        help="let the running agent learn this machine from its own sound for DURATION (e.g. 24h, 2d): state "
        "'learning', no alarms, then the bank and threshold from that audio; picked up at the agent's next start "
        "or reload (SIGHUP)",
    )
    c.add_argument(
        "--domain",
        choices=["source", "target"],
        default=None,
        help="operating condition of this audio: source (the first, well-covered one) or target (a new one, few "
        "clips); "
        "default: source, or as the DCASE file names say",
    )
    c.add_argument("--replace", action="store_true", help="start a new bank instead of adding to the existing one")
    thr = c.add_mutually_exclusive_group()
    thr.add_argument(
        "--false-alarms-per-week",
        type=float,
        default=None,
        help="threshold for this many false alarms a week on normal sound, estimated with the real alarm rule "
        "(smoothing, k of n) over held-out enrolment clips (default: the machine's alarm.false_alarms_per_week, 1)",
    )
    thr.add_argument("--false-alarms-per-day", type=float, default=None, help="the same budget per day")
    thr.add_argument(
        "--percentile",
        type=float,
        default=None,
        help="instead, the DCASE convention: this percentile (e.g. 0.90) of a gamma fitted to window scores; "
        "not an alarm budget (expect many false alarms a day)",
    )
    c.add_argument("--centres", type=int, default=16, help="k-means centres kept for the source domain (default 16)")
    c.add_argument(
        "--keep-source-samples", action="store_true", help="keep every source embedding too, not only the centres"
    )
    c.add_argument(
        "--compact-above",
        type=int,
        default=20000,
        metavar="N",
        help="a bank of more than N entries (e.g. with --keep-source-samples over hours of audio) scores on a PCA "
        "of its entries, several times faster; 0 keeps the exact k-NN at any size (default 20000)",
    )
    c.add_argument("--compact-dim", type=int, default=64, metavar="D", help="dimensions of that PCA (default 64)")
    c.add_argument(
        "--normalise-domains",
        action="store_true",
        help="z-score each domain's distances (needs source and target audio)",
    )
    c.add_argument(
        "--keep-outliers",
        action="store_true",
        help="enrol clips that sound unlike the others too (by default they are named and left out: one noise "
        "clip can raise the threshold several-fold)",
    )
    c.add_argument("--score", default=None, metavar="HEAD[+HEAD...]", help=SCORE_HELP)
    c.add_argument(
        "--class",
        dest="class_name",
        default=None,
        metavar="NAME",
        help="for classifier and rec-kld-center: the machine's class in the model (group|section, listed in the "
        "manifest)",
    )
    c.add_argument("--model", default=None, help="bundle name or directory (default: the config's model, or 'default')")
    c.add_argument(
        "--state-dir", type=Path, default=None, help="state directory (default: the config's, else the standard rule)"
    )
    c.add_argument(
        "--hop",
        type=float,
        default=None,
        help="hop between windows in seconds (default: the machine's hop_seconds, 1.0)",
    )
    c.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the score histogram PNG")
    adapt_options(c)
    c.set_defaults(func=cmd_calibrate)

    b = command("bank", help="inspect memory banks", description="Inspect the memory banks that calibrate wrote.")
    b.set_defaults(func=lambda _a: help_of(b))
    bsub = b.add_subparsers(dest="bank_command", metavar="SUBCOMMAND")
    bs = bsub.add_parser(
        "show",
        help="print a machine's bank summary",
        parents=[common],
        description="Entries per domain, enrolled windows and clips, threshold and its rule, the expected "
        "false-alarm rate and the model the bank was made with.",
    )
    bs.add_argument("--machine", required=True, help="machine id, as given to calibrate")
    bs.add_argument("--config", type=Path, help="config file whose state_dir holds the bank (optional)")
    bs.add_argument("--state-dir", type=Path, help="state directory (default: the config's, else the standard rule)")
    bs.set_defaults(func=cmd_bank_show)


def cmd_calibrate(a) -> int:
    from calibration.embed import CalibrationError
    from calibration.live import record_live
    from calibration.policy import threshold_policy
    from calibration.service import CalibrationRequest, calibrate
    from calibration.summary import summary_table
    from edge_agent.engine import open_engine

    machine_arg(a.machine)
    if a.learn:
        return request_learn(a)
    if a.compact_above < 0 or a.compact_dim < 1:
        raise UsageError("--compact-above must be 0 or more and --compact-dim 1 or more")
    if a.seconds is None and not a.from_paths:
        raise UsageError(
            "say where the normal sound comes from: --seconds N (record from the configured input), --from PATH... "
            "or --learn DURATION (the running agent learns from its own sound)"
        )
    cfg, bundle, state_dir = resolve_setup(a)
    mc = cfg.machines.get(a.machine) if cfg else None
    hop = a.hop or (mc.hop_seconds if mc else 1.0)
    engine = open_engine(bundle, cfg.engine if cfg else "auto")
    recording = None if a.from_paths else record_live(cfg, a.machine, a.seconds, bundle.frontend.sample_rate)
    path = bank_path(state_dir, a.machine)
    existing = MemoryBank.load(path) if path.exists() and not (a.replace or a.adapt) else None
    staged, heard = None, frozenset()
    if a.adapt:
        bundle, engine, staged, heard = _adapt(a, cfg, mc, bundle, engine, recording, state_dir)
        if staged is None and a.only_if_adapted:
            print(f"the bank of {a.machine} is unchanged (--only-if-adapted)")
            return 0
    policy = threshold_policy(
        a.percentile, a.false_alarms_per_day, hop, mc.alarm if mc else None, a.false_alarms_per_week
    )
    req = CalibrationRequest(
        machine=a.machine,
        paths=tuple(a.from_paths or ()),
        recording=recording,
        domain=a.domain,
        channel=mc.input.channel if mc else "mix",
        hop_seconds=hop,
        policy=policy,
        score=a.score,
        class_name=a.class_name,
        replace=a.replace,
        centres=a.centres,
        keep_source_samples=a.keep_source_samples,
        compact_above=a.compact_above,
        compact_dim=a.compact_dim,
        k=mc.k if mc else 1,
        normalise_domains=a.normalise_domains,
        keep_outliers=a.keep_outliers,
        heard=heard,
    )
    try:
        c = calibrate(req, engine, existing)
    except CalibrationError as e:
        _report_left_out(e.skipped, e.outliers, a.keep_outliers)
        adapt_cli.discard(staged)
        raise
    _report_left_out(c.skipped, c.outliers, a.keep_outliers)
    res = c.result
    if staged is not None:  # the model first: a bank is only ever in force with the model it names
        adapt_cli.install(staged, model_dir(state_dir, a.machine))
    res.bank.save(path)
    if a.adapt and staged is None:
        adapt_cli.discard(model_dir(state_dir, a.machine))  # an earlier adapted model no bank needs any more
    _keep_normal(a, state_dir, bundle, recording, req.channel, c)
    plot = None
    if a.plot:
        from calibration.report import plot_enrolment

        plot = plot_enrolment(res, path.with_name("calibration.png"), a.machine)
    for n in res.notes:
        print(f"note: {n}")
    print(summary_table(a.machine, res.bank, path, plot))
    overlap = res.bank.meta.get("training_overlap") or {}
    if overlap.get("warning"):
        print(f"warning: {overlap['warning']} (edge-agent calibrate --machine {a.machine} --learn 24h)")
    info = res.bank.meta.get("alarm_rate", {})
    if info.get("note"):
        print(f"warning: {info['note']}")
    if policy.percentile is not None and res.expected_alarms_per_day > 1.0:
        print(
            f"warning: with this threshold about {res.expected_alarms_per_day:.0f} false alarms a day are expected "
            "on normal sound "
            f"(the {100 * policy.percentile:g}th percentile is the DCASE convention, not an alarm budget); "
            "for live monitoring leave --percentile out (default: 1 false alarm a week)"
        )
    return 0


def _adapt(a, cfg, mc, bundle, engine, recording, state_dir):
    """--adapt: (bundle, engine, staged model folder or None, clips the adapted model learnt)."""
    from calibration.adapt_audio import pieces_from_paths, pieces_from_recording
    from edge_agent.engine import open_engine

    s = adapt_cli.settings(a)
    adapt_cli.generic_only(bundle)
    fe = bundle.frontend
    if recording is not None:
        pieces = pieces_from_recording(recording, fe.sample_rate, fe.window_samples, a.domain or "source")
    else:
        channel = mc.input.channel if mc else "mix"
        pieces, _ = pieces_from_paths(a.from_paths, fe.sample_rate, fe.window_seconds, channel, a.domain)
    staged = model_dir(state_dir, a.machine).with_name("model.new")
    adapt_cli.discard(staged)
    outcome = adapt_cli.adapt(engine, pieces, a.machine, staged, s, tuple(a.from_paths or ()), a.adapt_always)
    print(outcome.describe() + (" (--adapt-always: used anyway)" if a.adapt_always and not outcome.kept else ""))
    if outcome.bundle_dir is None:
        return bundle, engine, None, frozenset()
    own = Bundle.load(staged)
    print(f"enrolling with the adapted model {own.name} (its threshold is fitted on the held-out audio)")
    return own, open_engine(own, cfg.engine if cfg else "auto"), staged, frozenset(p.group for p in outcome.learn)


def _keep_normal(a, state_dir, bundle, recording, channel, c) -> None:
    """A few enrolled normal clips beside the bank, for the status page's A/B listening."""
    from calibration.normal_clips import keep_normal_clips
    from edge_agent.audio.wavio import iter_wavs

    left_out = {str(p) for p, _ in c.skipped} | {str(o.clip) for _, o in c.outliers if not a.keep_outliers}
    files = [f for f in iter_wavs(a.from_paths or ()) if not ({str(f), f.name, f.stem} & left_out)]
    kept = keep_normal_clips(state_dir, a.machine, bundle.frontend.sample_rate, files, recording, channel)
    if kept:
        print(f"kept {len(kept)} normal clip(s) for A/B listening on the status page in {kept[0].parent}")


def _report_left_out(skipped, outliers, kept: bool) -> None:
    for p, why in skipped:
        print(f"skipped {p}: {why}", file=sys.stderr)
    for d, o in outliers:
        what = "kept (--keep-outliers)" if kept else "excluded"
        print(
            f"{what} {o.clip}: it sounds unlike the other {d} clips (distance {o.distance:.3f} to them; the others are "
            f"within {o.typical:.3f}): noise, another machine or a fault?"
            + ("" if kept else " If it is normal sound of this machine, enrol it anyway with --keep-outliers"),
            file=sys.stderr,
        )


def state_dir_of(a, cfg: Optional[Config]) -> Path:
    """--state-dir, else the config's state_dir, else the default rule."""
    return Path(a.state_dir or (cfg.resolved_state_dir() if cfg else default_state_dir()))


def writable_state_dir(a, cfg: Optional[Config]) -> Path:
    return usable_state_dir(state_dir_of(a, cfg), "--state-dir or state_dir in the config")


def resolve_setup(a) -> tuple[Optional[Config], Bundle, Path]:
    cfg = None
    if a.config is not None or a.seconds is not None:
        cfg = load_config(a.config)
    model = a.model or (cfg.model if cfg else "default")
    bundle = Bundle.load(model)
    return cfg, bundle, writable_state_dir(a, cfg)


def machine_arg(name: str) -> str:
    try:
        return check_machine_id(name)
    except ValueError as e:
        raise UsageError(f"--machine: {e}") from None


def request_learn(a) -> int:
    from edge_agent.config import learn_seconds
    from edge_agent.runtime.learn_request import request_learning
    from edge_agent.scoring.heads import REGISTRY, ScoreError, parse_score

    try:
        seconds = learn_seconds(parse_duration(a.learn), a.learn)
    except ValueError as e:
        raise UsageError(f"--learn: {e}") from None
    cfg = load_config(a.config) if a.config else None
    if a.score is not None:
        try:
            kinds = parse_score(a.score)
        except ScoreError as e:
            raise UsageError(str(e)) from None
        if any(not REGISTRY[k].learnable for k in kinds):
            learnable = [k for k, h in REGISTRY.items() if h.learnable]
            raise UsageError(
                f"--learn with --score {a.score}: a learning period scores with {' or '.join(learnable)} "
                "(or both, joined by '+'); for another head, calibrate from recordings (--from or --seconds)"
            )
    if a.adapt:
        adapt_cli.settings(a)  # the agent adapts in a child process: the train extra must be there
    path = request_learning(
        writable_state_dir(a, cfg), a.machine, seconds, a.score, a.adapt, a.corpus, a.adapt_steps if a.adapt else None
    )
    print(
        f"learning requested for {a.machine}: {a.learn} of its own sound ({path})"
        + (f", its bank to score with {a.score}" if a.score else "")
        + ". The running agent starts it at "
        "its next "
        "start or reload (systemctl reload edge-agent); until it is over the machine is 'learning' and raises no "
        "alarms."
        + (
            " At its end the agent adapts the model to a sample of that sound and switches to it if the check keeps "
            "it (docs/model.md, 'Field adaptation')."
            if a.adapt
            else ""
        )
    )
    return 0


def cmd_bank_show(a) -> int:
    machine_arg(a.machine)
    from calibration.summary import summary_table

    cfg = load_config(a.config) if a.config else None
    path = bank_path(state_dir_of(a, cfg), a.machine)
    bank = MemoryBank.load(path)
    plot = path.with_name("calibration.png")
    print(summary_table(a.machine, bank, path, plot if plot.exists() else None))
    return 0
