"""``edge-agent``: the one command-line entry point.

Exit codes: 0 ok, 2 usage or config error (the message names the bad key or file and why),
1 runtime failure. Commands that need torch (train, export) or TensorRT (build-engine) import it
only when they run and say how to install it when it is missing.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from . import __version__
from .errors import UserError

log = logging.getLogger("edge_agent")


class UsageError(UserError):
    """Bad input from the user: exit code 2."""


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _need_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError(
            f"'edge-agent {command}' needs PyTorch, which is not installed. Install the training extra: "
            "pip install 'edge-agent[train]' (on the project's machines: pip install torch==2.13.0 first)"
        ) from None


# -- commands ----------------------------------------------------------------------------------
def cmd_run(a) -> int:
    from .agent import Agent
    from .publish.sinks import ConsoleSink
    from .config import load_config
    from .health import Health, start_metrics
    from .publish.mqtt import MQTTPublisher
    from .publish.sinks import open_outbox, OutboxOnlySink

    cfg = load_config(a.config)
    console = ConsoleSink()
    agent = Agent.from_config(cfg, [])
    agent.config_path = a.config
    from calibration.learning import learner_factory

    agent.use_learners(learner_factory(cfg, agent.bundle))
    if a.scores:
        agent.on_window.append(console.window)
    outbox = open_outbox(cfg)
    pub = None
    if cfg.mqtt is not None:
        pub = MQTTPublisher(cfg, outbox, list(cfg.machines), agent.bundle.name, states=agent.current_states)
        durable = pub
    else:
        log.info("no mqtt section: alarms go to the console and the outbox %s", outbox.path)
        durable = OutboxOnlySink(outbox)
    # The durable sink first: an event printed on the console is already in the outbox.
    agent.sinks += [durable, console]
    agent.status_sources.append(durable.status_line)
    if pub is not None:
        pub.start()
    Health(agent)
    if cfg.metrics is not None:
        try:
            start_metrics(agent, cfg.metrics.listen, durable)
        except OSError as e:
            raise UsageError(f"metrics.listen {cfg.metrics.listen}: cannot listen there ({e.strerror})") from None
    _install_signals(agent)
    return agent.run()


def _install_signals(agent) -> None:
    # Plain assignments only: no lock, no logging (see Agent.signalled).
    def _stop(signum, _frame):
        agent.signalled = signal.Signals(signum).name

    def _reload(_signum, _frame):
        agent.reload_signalled = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)


def cmd_demo(a) -> int:
    from .demo import run_demo

    return run_demo(realtime=a.realtime, model=a.model)


def cmd_devices(a) -> int:
    from .audio.devices import list_inputs

    rows = list_inputs()  # says what to install when PortAudio is missing
    if not rows:
        print("no audio input devices found (is PulseAudio/ALSA running and a microphone connected?)")
        return 1
    print(f"{'index':>5}  {'channels':>8}  {'rate':>7}  name")
    for r in rows:
        print(f"{r['index']:>5}  {r['channels']:>8}  {r['rate']:>7.0f}  {r['name']}{'  (default)' if r['default'] else ''}")
    return 0


def cmd_calibrate(a) -> int:
    from calibration.calibrate import calibrate_command

    return calibrate_command(a)


def cmd_bank_show(a) -> int:
    from calibration.calibrate import show_bank

    return show_bank(a)


def cmd_evaluate(a) -> int:
    from calibration.report import evaluate_command

    return evaluate_command(a)


def _speeds(text):
    if text is None:
        return None
    try:
        v = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--speed-perturb {text!r}: give factors like 0.9,1.0,1.1") from None
    if not v or any(not 0.5 <= f <= 2.0 for f in v):
        raise UsageError(f"--speed-perturb {text!r}: factors between 0.5 and 2.0")
    return v


def cmd_train(a) -> int:
    _need_torch("train")
    from export.train import TrainArgs, train

    import json

    try:
        recipe_config = json.loads(a.recipe_config) if a.recipe_config else {}
    except json.JSONDecodeError as e:
        raise UsageError(f"--recipe-config is not valid JSON: {e}") from None
    if a.window_seconds:
        recipe_config["window_seconds"] = a.window_seconds
    args = TrainArgs(data=[str(d) for d in a.data], out=str(a.out), recipe=a.recipe, epochs=a.epochs, batch_size=a.batch_size,
                     lr=a.lr, seed=a.seed, loss=a.loss or "", mixup_alpha=0.0 if a.no_mixup else 0.5, use_smote=not a.no_smote,
                     time_warp=0.0 if a.no_time_warp else 0.1, exclude_test_of=a.exclude_test_of or [], recipe_config=recipe_config,
                     pretrained=a.pretrained, speed_perturb=_speeds(a.speed_perturb))
    for d in a.data:
        if not Path(d).is_dir():
            raise UsageError(f"--data {d}: no such directory (a dataset in the DCASE layout <machine>/train/*.wav)")
    from export.pretrained import PretrainedError

    try:
        r = train(args)
    except TypeError as e:  # an unknown key in --recipe-config
        raise UsageError(f"--recipe-config: {e}") from None
    except PretrainedError as e:
        raise UsageError(str(e)) from None
    d = r["data"]
    print(f"trained {a.recipe} for {r['epochs']} epochs in {r['seconds']:.0f} s on {d['clips']} clips ({d['seconds']:.0f} s of audio, "
          f"{d['joint_classes']} joint classes, {len(d['machine_classes'])} machine types, {d['skipped']} files skipped); "
          f"final loss {r['final_loss']:.4f}; checkpoint {r['checkpoint']}")
    return 0


def cmd_export(a) -> int:
    _need_torch("export")
    from export.onnx_export import export_bundle

    try:
        export_bundle(a.checkpoint, a.out, name=a.name, version=a.version, parity_clips=a.clips or (), tolerance=a.tolerance)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    return 0


def cmd_build_engine(a) -> int:
    from export.tensorrt_build import build_engine

    path = build_engine(a.bundle, fp16=a.fp16, cache_dir=a.cache_dir, max_batch=a.max_batch)  # TensorRTMissing: exit 2
    print(f"engine written to {path}")
    return 0


# -- parser ------------------------------------------------------------------------------------
SCORE_HELP = ("score head (default: the bundle's own, k-NN for most): knn (distance to the bank, any machine); classifier "
              "(1 - softmax(logits)[--class], stgram/sepstgram); rec-kld (VAE reconstruction + KL, clvae, any machine); "
              "rec-kld-center (+ lambda x center-loss distance, clvae, --class); join heads with '+' for an ensemble of "
              "z-normalised scores, e.g. rec-kld+rec-kld-center or knn+rec-kld")


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (``edge-agent run -v`` as ``edge-agent -v run``)."""
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument("-v", "--verbose", dest="verbose_sub", action="count", default=0,
                   help="more log output (-v info, -vv debug)")
    return c


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog="edge-agent",
        description="Listen to machines, learn what normal sounds like, and raise MQTT alarms when they start to sound wrong.",
        epilog="Start with 'edge-agent demo'. Docs: README.md and docs/ in the source tree.",
    )
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    r = command("run", help="run the agent (the daemon)", description="Listen to every configured machine until SIGTERM/SIGINT; "
                       "with only non-looping WAV replays as inputs, exit 0 once every window is scored.")
    r.add_argument("--config", type=Path, help="config file (default /etc/edge-agent/config.yaml, then $XDG_CONFIG_HOME/edge-agent/config.yaml)")
    r.add_argument("--scores", action="store_true",
                   help="also print every window's score, its threshold, level and the machine's state (one line per window)")
    r.set_defaults(func=cmd_run)

    d = command("demo", help="the whole pipeline on bundled real clips, no set-up",
                       description="Enrol a fan from bundled normal clips with the built-in model, then replay normal and "
                       "anomalous clips through the production path and print what the agent decides.")
    d.add_argument("--realtime", action="store_true", help="replay at real-time pace (default: as fast as possible)")
    d.add_argument("--model", default="default", help="bundle name or directory (default: the built-in model)")
    d.set_defaults(func=cmd_demo)

    v = command("devices", help="list audio input devices", description="Input devices with index, channels and default sample rate; "
                       "use the index or a part of the name as machines.<id>.input.device.")
    v.set_defaults(func=cmd_devices)

    c = command("calibrate", help="enrol normal sound of a machine and set its alarm threshold",
                       description="Record (or read) normal sound of one machine, add its embeddings to the machine's memory bank "
                       "and fit the alarm threshold. Run it again with --domain target after a change of operating condition.")
    c.add_argument("--machine", required=True, help="machine id (a name: letters, digits, _ . -)")
    c.add_argument("--config", type=Path, help="config file (needed for live recording; optional with --from)")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--seconds", type=float, help="record this many seconds from the machine's configured input")
    src.add_argument("--from", dest="from_paths", nargs="+", type=Path, metavar="PATH", help="WAV files or folders (DCASE layout or plain)")
    src.add_argument("--learn", metavar="DURATION", default=None,
                     help="let the running agent learn this machine from its own sound for DURATION (e.g. 24h, 2d): state "
                     "'learning', no alarms, then the bank and threshold from that audio; picked up at the agent's next start "
                     "or reload (SIGHUP)")
    c.add_argument("--domain", choices=["source", "target"], default=None,
                   help="operating condition of this audio: source (the first, well-covered one) or target (a new one, few clips); "
                   "default: source, or as the DCASE file names say")
    c.add_argument("--replace", action="store_true", help="start a new bank instead of adding to the existing one")
    thr = c.add_mutually_exclusive_group()
    thr.add_argument("--false-alarms-per-week", type=float, default=None,
                     help="threshold for this many false alarms a week on normal sound, estimated with the real alarm rule "
                     "(smoothing, k of n) over held-out enrolment clips (default: the machine's alarm.false_alarms_per_week, 1)")
    thr.add_argument("--false-alarms-per-day", type=float, default=None, help="the same budget per day")
    thr.add_argument("--percentile", type=float, default=None,
                     help="instead, the DCASE convention: this percentile (e.g. 0.90) of a gamma fitted to window scores; "
                     "not an alarm budget (expect many false alarms a day)")
    c.add_argument("--centres", type=int, default=16, help="k-means centres kept for the source domain (default 16)")
    c.add_argument("--keep-source-samples", action="store_true", help="keep every source embedding too, not only the centres")
    c.add_argument("--normalise-domains", action="store_true", help="z-score each domain's distances (needs source and target audio)")
    c.add_argument("--keep-outliers", action="store_true",
                   help="enrol clips that sound unlike the others too (by default they are named and left out: one noise "
                   "clip can raise the threshold several-fold)")
    c.add_argument("--score", default=None, metavar="HEAD[+HEAD...]", help=SCORE_HELP)
    c.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="for classifier and rec-kld-center: the machine's class in the model (group|section, listed in the manifest)")
    c.add_argument("--model", default=None, help="bundle name or directory (default: the config's model, or 'default')")
    c.add_argument("--state-dir", type=Path, default=None, help="state directory (default: the config's, else the standard rule)")
    c.add_argument("--hop", type=float, default=None, help="hop between windows in seconds (default: the machine's hop_seconds, 1.0)")
    c.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the score histogram PNG")
    c.set_defaults(func=cmd_calibrate)

    b = command("bank", help="inspect memory banks", description="Inspect the memory banks that calibrate wrote.")
    b.set_defaults(func=lambda _a: _help_of(b))
    bsub = b.add_subparsers(dest="bank_command", metavar="SUBCOMMAND")
    bs = bsub.add_parser("show", help="print a machine's bank summary", parents=[common],
                         description="Entries per domain, enrolled windows and clips, threshold and its rule, the expected "
                         "false-alarm rate and the model the bank was made with.")
    bs.add_argument("--machine", required=True, help="machine id, as given to calibrate")
    bs.add_argument("--config", type=Path, help="config file whose state_dir holds the bank (optional)")
    bs.add_argument("--state-dir", type=Path, help="state directory (default: the config's, else the standard rule)")
    bs.set_defaults(func=cmd_bank_show)

    e = command("evaluate", help="DCASE-style scores on a dataset folder",
                       description="For every machine folder (<machine>/train, <machine>/test) under DATA_DIR: build the bank from "
                       "train/ as calibrate does, score test/ as the runtime does, and report AUC (source, target), pAUC, "
                       "harmonic mean, precision/recall/F1, DCASE submission CSVs and ROC plots.")
    e.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    e.add_argument("--model", default="default", help="bundle name or directory")
    e.add_argument("--out", type=Path, default=None, help="output folder (default ./evaluation-<model>)")
    e.add_argument("--hop", type=float, default=1.0, help="hop between windows in seconds (default 1.0)")
    e.add_argument("--engine", default="cpu", help="engine: auto, cpu, cuda, tensorrt (default cpu)")
    e.add_argument("--centres", type=int, default=16, help="k-means centres per machine for the source domain (default 16)")
    e.add_argument("--normalise-domains", action="store_true",
                   help="z-score each domain's distances with its enrolment statistics before taking the minimum")
    e.add_argument("--score", default=None, metavar="HEAD[+HEAD...]",
                   help=SCORE_HELP + "; heads that need a class take the class whose group|section matches the machine folder")
    e.set_defaults(func=cmd_evaluate)

    t = command("train", help="train a recipe (needs the 'train' extra)", description="Train an embedding network on normal clips.")
    t.add_argument("--recipe", default="dualbranch", choices=["dualbranch", "stgram", "sepstgram", "framevit", "clvae", "w2v-ast"],
                   help="recipe (docs/model.md): dualbranch (default), stgram, sepstgram, framevit, clvae, w2v-ast")
    t.add_argument("--data", type=Path, action="append", required=True, help="dataset folder (repeatable)")
    t.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    t.add_argument("--epochs", type=int, default=40, help="passes over the training clips (default 40)")
    t.add_argument("--batch-size", type=int, default=32, help="windows per optimisation step (default 32)")
    t.add_argument("--lr", type=float, default=1e-3, help="initial learning rate of Adam (default 0.001)")
    t.add_argument("--seed", type=int, default=0, help="random seed for weights, crops and augmentation (default 0)")
    t.add_argument("--loss", default=None, choices=["subcluster-adacos", "adacos", "arcface", "softmax"],
                   help="default: the recipe's (sub-cluster AdaCos for dualbranch, cross-entropy for stgram/sepstgram, ArcFace for framevit)")
    t.add_argument("--recipe-config", default=None, metavar="JSON",
                   help='recipe settings, e.g. \'{"layers": 4, "hidden": 192, "mlp": 768, "heads": 4}\' for a small framevit')
    t.add_argument("--window-seconds", type=float, default=None, help="window length (default: the recipe's)")
    t.add_argument("--no-mixup", action="store_true", help="switch mixup off")
    t.add_argument("--no-smote", action="store_true", help="switch SMOTE oversampling of rare attribute classes off")
    t.add_argument("--no-time-warp", action="store_true", help="switch time-warp augmentation off")
    t.add_argument("--exclude-test-of", action="append", metavar="GROUP",
                   help="machine folder (e.g. dcase2023t2/valve) whose test normals must not be trained on (repeatable)")
    t.add_argument("--pretrained", action="append", default=[], metavar="[PART=]PATH",
                   help="local pre-trained weights (never downloaded; repeatable): w2v-ast takes wav2vec2=PATH and ast=PATH "
                   "(Hugging Face folder/.safetensors/.bin, fairseq .pt, AST .pth), clvae takes panns=PATH (PANNs .pth); "
                   "docs/model.md says where to get them")
    t.add_argument("--speed-perturb", default=None, metavar="F,F,...",
                   help="speed factors drawn per clip and epoch, e.g. 0.9,1.0,1.1 (default: the recipe's; w2v-ast uses 0.9,1.0,1.1)")
    t.set_defaults(func=cmd_train)

    x = command("export", help="checkpoint(s) -> model bundle (ONNX + manifest), with a parity check",
                       description="Export a training checkpoint to a bundle. Several checkpoints of one recipe (e.g. seeds) "
                       "become one ensemble model whose embedding averages the members' cosine similarities.")
    x.add_argument("checkpoint", type=Path, nargs="+")
    x.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    x.add_argument("--name", default=None, help="bundle name in the manifest (default: the output folder's name)")
    x.add_argument("--version", default=None, help="bundle version in the manifest (default: the recipe and seeds)")
    x.add_argument("--clips", type=Path, nargs="+", help="real clips for the parity check (default: the bundled demo clips)")
    x.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest difference allowed between ONNX Runtime and PyTorch outputs on the clips (default 1e-4)")
    x.set_defaults(func=cmd_export)

    g = command("build-engine", help="build a TensorRT engine for a bundle (needs TensorRT 10 and a GPU)",
                       description="Build and cache a TensorRT engine for this GPU; run uses it with engine: tensorrt.")
    g.add_argument("bundle", help="bundle name or directory")
    g.add_argument("--fp16", action="store_true", help="allow FP16 kernels (faster on Jetson; check quality with evaluate)")
    g.add_argument("--max-batch", type=int, default=32, help="largest batch of windows the engine accepts (default 32)")
    g.add_argument("--cache-dir", type=Path, default=None, help="where engines are cached (default: <bundle>/engines)")
    g.set_defaults(func=cmd_build_engine)
    return p


def _help_of(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "func", None):
        parser.print_help()
        return 2
    verbose = a.verbose + getattr(a, "verbose_sub", 0)
    _setup_logging(verbose if a.command not in ("run", "demo") else max(1, verbose))
    from .engine import EngineError

    try:
        return int(a.func(a) or 0)
    except UserError as e:
        print(f"edge-agent {a.command}: {e}", file=sys.stderr)
        return 2
    except EngineError as e:
        print(f"edge-agent {a.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
