"""``train``, ``export`` and ``build-engine``: the commands that need torch or TensorRT, which they
import only when they run."""

from __future__ import annotations

from pathlib import Path

from edge_agent.cli.common import UsageError, need_torch


def add_parsers(command) -> None:
    from export.recipes import RECIPES

    t = command(
        "train",
        help="train a recipe (needs the 'train' extra)",
        description="Train an embedding network on normal clips.",
    )
    t.add_argument(
        "--recipe",
        default="dualbranch",
        choices=RECIPES,
        help=f"recipe (docs/model.md): {', '.join(RECIPES)}; default dualbranch",
    )
    t.add_argument("--data", type=Path, action="append", required=True, help="dataset folder (repeatable)")
    t.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    t.add_argument("--epochs", type=int, default=40, help="passes over the training clips (default 40)")
    t.add_argument("--batch-size", type=int, default=32, help="windows per optimisation step (default 32)")
    t.add_argument("--lr", type=float, default=1e-3, help="initial learning rate of Adam (default 0.001)")
    t.add_argument("--seed", type=int, default=0, help="random seed for weights, crops and augmentation (default 0)")
    t.add_argument(
        "--loss",
        default=None,
        choices=["subcluster-adacos", "adacos", "arcface", "softmax"],
        help="default: the recipe's (sub-cluster AdaCos for dualbranch, cross-entropy for stgram/sepstgram, ArcFace "
        "for framevit)",
    )
    t.add_argument(
        "--recipe-config",
        default=None,
        metavar="JSON",
        help='recipe settings, e.g. \'{"layers": 4, "hidden": 192, "mlp": 768, "heads": 4}\' for a small framevit',
    )
    t.add_argument("--window-seconds", type=float, default=None, help="window length (default: the recipe's)")
    t.add_argument("--no-mixup", action="store_true", help="switch mixup off")
    t.add_argument("--no-smote", action="store_true", help="switch SMOTE oversampling of rare attribute classes off")
    t.add_argument("--no-time-warp", action="store_true", help="switch time-warp augmentation off")
    t.add_argument(
        "--exclude-test-of",
        action="append",
        metavar="GROUP",
        help="machine folder (e.g. dcase2023t2/valve) whose test normals must not be trained on (repeatable)",
    )
    t.add_argument(
        "--exclude",
        action="append",
        metavar="GROUP",
        help="machine folder (e.g. dcase2023t2/valve) to leave out of training altogether, e.g. to measure on "
        "machines the model has never heard (repeatable)",
    )
    t.add_argument(
        "--hold-out",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="keep about this fraction of each machine folder's clips (every n-th by name) out of training; "
        "the bundle lists the clips it was trained on, so 'calibrate' given all of them enrols them all but fits "
        "the threshold on the held-out ones, whose scores are honest (default 0: train on everything)",
    )
    t.add_argument(
        "--pretrained",
        action="append",
        default=[],
        metavar="[PART=]PATH",
        help="local pre-trained weights (never downloaded; repeatable): w2v-ast takes wav2vec2=PATH and ast=PATH "
        "(Hugging Face folder/.safetensors/.bin, fairseq .pt, AST .pth), clvae takes panns=PATH (PANNs .pth); "
        "docs/model.md says where to get them",
    )
    t.add_argument(
        "--speed-perturb",
        default=None,
        metavar="F,F,...",
        help="speed factors drawn per clip and epoch, e.g. 0.9,1.0,1.1 (default: the recipe's; w2v-ast uses "
        "0.9,1.0,1.1)",
    )
    t.set_defaults(func=cmd_train)

    x = command(
        "export",
        help="checkpoint(s) -> model bundle (ONNX + manifest), with a parity check",
        description="Export a training checkpoint to a bundle. Several checkpoints of one recipe (e.g. seeds) "
        "become one ensemble model whose embedding averages the members' cosine similarities.",
    )
    x.add_argument("checkpoint", type=Path, nargs="+")
    x.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    x.add_argument("--name", default=None, help="bundle name in the manifest (default: the output folder's name)")
    x.add_argument("--version", default=None, help="bundle version in the manifest (default: the recipe and seeds)")
    x.add_argument(
        "--clips", type=Path, nargs="+", help="real clips for the parity check (default: the bundled demo clips)"
    )
    x.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest difference allowed between ONNX Runtime and PyTorch outputs on the clips (default 1e-4)",
    )
    x.set_defaults(func=cmd_export)

    q = command(
        "quantize",
        help="bundle -> an INT8 copy for ONNX Runtime, calibrated on real clips (needs the 'train' extra)",
        description="Quantise a bundle's weights and activations to INT8 (ONNX Runtime static quantisation, QDQ, "
        "per-channel weights), with activation ranges measured on real windows. The copy is a new bundle: "
        "calibrate machines again with it, and compare speed and quality before using it (docs/performance.md).",
    )
    q.add_argument("bundle", help="bundle name or directory (default model: default)")
    q.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    q.add_argument(
        "--clips",
        type=Path,
        nargs="+",
        required=True,
        help="WAV files or folders of the machines' normal sound: the activation ranges are measured on them",
    )
    q.add_argument(
        "--windows", type=int, default=256, help="largest number of windows (hop 1 s) to calibrate on (default 256)"
    )
    q.set_defaults(func=cmd_quantize)

    g = command(
        "build-engine",
        help="build a TensorRT engine for a bundle (needs TensorRT 10 and a GPU)",
        description="Build and cache a TensorRT engine for this GPU; run uses it with engine: tensorrt.",
    )
    g.add_argument("bundle", help="bundle name or directory")
    g.add_argument(
        "--fp16", action="store_true", help="allow FP16 kernels (faster on Jetson; check quality with evaluate)"
    )
    g.add_argument("--max-batch", type=int, default=32, help="largest batch of windows the engine accepts (default 32)")
    g.add_argument("--cache-dir", type=Path, default=None, help="where engines are cached (default: <bundle>/engines)")
    g.set_defaults(func=cmd_build_engine)


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
    need_torch("train")
    import json

    from export.train import TrainArgs, train

    try:
        recipe_config = json.loads(a.recipe_config) if a.recipe_config else {}
    except json.JSONDecodeError as e:
        raise UsageError(f"--recipe-config is not valid JSON: {e}") from None
    if a.window_seconds:
        recipe_config["window_seconds"] = a.window_seconds
    args = TrainArgs(
        data=[str(d) for d in a.data],
        out=str(a.out),
        recipe=a.recipe,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        loss=a.loss or "",
        mixup_alpha=0.0 if a.no_mixup else 0.5,
        use_smote=not a.no_smote,
        time_warp=0.0 if a.no_time_warp else 0.1,
        exclude_test_of=a.exclude_test_of or [],
        exclude=a.exclude or [],
        hold_out=a.hold_out,
        recipe_config=recipe_config,
        pretrained=a.pretrained,
        speed_perturb=_speeds(a.speed_perturb),
    )
    for d in a.data:
        if not Path(d).is_dir():
            raise UsageError(f"--data {d}: no such directory (a dataset in the DCASE layout <machine>/train/*.wav)")
    if not 0.0 <= a.hold_out <= 0.5:
        raise UsageError(f"--hold-out {a.hold_out:g}: give a fraction between 0 and 0.5 (e.g. 0.3)")
    from export.pretrained import PretrainedError
    from export.recipes import build_config

    try:  # an unknown key (TypeError) or a refused value (ValueError), before any data is read
        build_config(a.recipe, recipe_config)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--recipe-config: {e}") from None
    try:
        r = train(args)
    except PretrainedError as e:
        raise UsageError(str(e)) from None
    d = r["data"]
    print(
        f"trained {a.recipe} for {r['epochs']} epochs in {r['seconds']:.0f} s on {d['clips']} clips "
        f"({d['seconds']:.0f} s of audio, "
        f"{d['joint_classes']} joint classes, {len(d['machine_classes'])} machine types, {d['skipped']} files "
        "skipped); "
        f"final loss {r['final_loss']:.4f}; checkpoint {r['checkpoint']}"
    )
    return 0


def cmd_export(a) -> int:
    need_torch("export")
    from export.onnx_export import export_bundle

    try:
        export_bundle(
            a.checkpoint, a.out, name=a.name, version=a.version, parity_clips=a.clips or (), tolerance=a.tolerance
        )
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    return 0


def cmd_quantize(a) -> int:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UsageError(
            "'edge-agent quantize' needs the onnx package; install the training extra: pip install 'edge-agent[train]'"
        ) from None
    from edge_agent.model.bundle import Bundle
    from export.quantize import quantize_bundle

    if a.windows < 1:
        raise UsageError("--windows must be 1 or more")
    try:
        q = quantize_bundle(Bundle.load(a.bundle), a.out, a.clips, a.windows)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(
        f"wrote {q.path}: {q.name} {q.version}, calibrated on {q.manifest.quantization['calibration_windows']} "
        f"windows; calibrate machines with it (model: {q.path}) and check it with evaluate"
    )
    return 0


def cmd_build_engine(a) -> int:
    from export.tensorrt_build import build_engine

    path = build_engine(a.bundle, fp16=a.fp16, cache_dir=a.cache_dir, max_batch=a.max_batch)  # TensorRTMissing: exit 2
    print(f"engine written to {path}")
    return 0
