"""Shared fixtures: real clips (tests/data, the bundled demo clips, ../shared/data when present),
a tiny trained model bundle, and the shipped default bundle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEMO = ROOT / "edge_agent" / "demo_clips"

TINY_RECIPE = {
    "window_seconds": 1.0,
    "n_fft": 512,
    "hop": 256,
    "branch_dim": 16,
    "spec_channels": 8,
    "spec_convs": [[64, 16], [16, 4]],
    "res_channels": [4, 8],
    "stem_channels": 4,
}


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is not here (the project's ../shared/data)")
    return p


@pytest.fixture(scope="session")
def valve_small() -> Path:
    return DATA / "valve"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, valve_small) -> Path:
    pytest.importorskip("torch")
    from export.train import TrainArgs, train

    out = tmp_path_factory.mktemp("tiny") / "tiny.ckpt"
    train(
        TrainArgs(
            data=[str(valve_small)],
            out=str(out),
            epochs=2,
            batch_size=8,
            recipe_config=TINY_RECIPE,
            sub_clusters=2,
            exclude_test_of=[],
            include_test_normals=False,
        ),
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    from export.onnx_export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(
        tiny_checkpoint, out, name="tiny", version="test", parity_clips=[DATA / "valve" / "train"], log=lambda *_: None
    )
    return out


@pytest.fixture()
def tiny_bundle_copy(tmp_path, tiny_bundle) -> Path:
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def pulse(tmp_path_factory):
    """A private PulseAudio server with a null sink; PortAudio's 'pulse' device captures its monitor.

    Yields a function that plays a WAV into the sink (returns the paplay process)."""
    import subprocess
    import time

    if not shutil.which("pulseaudio") or not shutil.which("paplay"):
        pytest.skip("pulseaudio/paplay not installed (scripts/run-tests installs them)")
    d = tmp_path_factory.mktemp("pulse")
    (d / "run").mkdir()
    env = {**os.environ, "HOME": str(d), "PULSE_RUNTIME_PATH": str(d / "run"), "XDG_RUNTIME_DIR": str(d)}
    sock = d / "run" / "native"
    proc = subprocess.Popen(
        [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=no",
            "-L",
            f"module-native-protocol-unix socket={sock} auth-anonymous=1",
            "-L",
            "module-null-sink sink_name=edgetest sink_properties=device.description=edgetest",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"pulseaudio did not start: {proc.stderr.read().decode()[-500:]}")
    old = {k: os.environ.get(k) for k in ("PULSE_SERVER", "PULSE_SOURCE")}
    os.environ["PULSE_SERVER"] = f"unix:{sock}"
    os.environ["PULSE_SOURCE"] = "edgetest.monitor"

    def play(path):
        return subprocess.Popen(["paplay", "--device=edgetest", str(path)], env={**os.environ})

    play.env = {"PULSE_SERVER": f"unix:{sock}", "PULSE_SOURCE": "edgetest.monitor"}
    yield play
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(5)


def small_recipe_bundle(recipe: str, config: dict, d: Path):
    """Train a recipe for 2 epochs on real clips of two machines (valve, and the demo's fan clips in
    a folder named enrol, so classifiers have two classes) and export it with the parity check."""
    from export.onnx_export import export_bundle
    from export.train import TrainArgs, load_checkpoint, train

    train(
        TrainArgs(
            data=[str(DATA / "valve"), str(DEMO / "enrol")],
            out=str(d / "m.ckpt"),
            recipe=recipe,
            epochs=2,
            batch_size=8,
            recipe_config=config,
            exclude_test_of=[],
            include_test_normals=False,
        ),
        progress=False,
    )
    ck = load_checkpoint(d / "m.ckpt")
    assert ck["section_classes"] == ["enrol|id_00", "valve|00"] and np.isfinite(ck["loss_history"]).all()
    export_bundle(d / "m.ckpt", d / "bundle", name=recipe, parity_clips=[DATA / "valve" / "train"], log=lambda *_: None)
    return d / "bundle", ck


def _enrolled(tmp_path_factory, name: str, *options) -> Path:
    """A state directory with machine fan01 enrolled from the demo's normal fan clips."""
    from tests.test_run_replay import cli

    st = tmp_path_factory.mktemp(name)
    r = cli("calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", st, "--no-plot", *options)
    assert r.returncode == 0, r.stderr
    return st


@pytest.fixture(scope="session")
def _calibrated_once(tmp_path_factory) -> Path:
    return _enrolled(tmp_path_factory, "fan01-state")


@pytest.fixture(scope="session")
def _sensitive_once(tmp_path_factory) -> Path:
    return _enrolled(tmp_path_factory, "sensitive", "--percentile", "0.9")


def _module_copy(tmp_path_factory, src: Path, name: str) -> Path:
    """A module's own copy of a state directory enrolled once per session: agents write into it."""
    dst = tmp_path_factory.mktemp(name) / "state"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, _calibrated_once) -> Path:
    """fan01 enrolled at the default budget (a copy per test module)."""
    return _module_copy(tmp_path_factory, _calibrated_once, "fan01-state")


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory, _sensitive_once) -> Path:
    """fan01 enrolled with the demo's threshold (90th percentile), so that a single anomalous clip
    raises an alarm at once (a copy per test module)."""
    return _module_copy(tmp_path_factory, _sensitive_once, "sensitive")
