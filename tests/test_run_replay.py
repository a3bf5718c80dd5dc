"""The production path on recorded audio: calibrate from real clips, then `edge-agent run` over
replays (one machine, two machines, an 8-channel file), and the runtime without torch."""

import subprocess
import sys
import textwrap

import pytest

from tests.cliproc import BLOCK_TORCH, cli, spawn  # noqa: F401 - the other test modules import them from here
from tests.conftest import DATA, DEMO, ROOT, shared


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    st = tmp_path_factory.mktemp("state")
    r = cli(
        "calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", st, "--no-plot", block_torch=True
    )
    assert r.returncode == 0, r.stderr
    return st


def write_config(path, state, machines: dict) -> None:
    lines = ["node_id: test-node", f"state_dir: {state}", "engine: cpu", "machines:"]
    for name, inp in machines.items():
        lines.append(f"  {name}:")
        lines.append("    input: {" + ", ".join(f"{k}: {v}" for k, v in inp.items()) + "}")
        lines.append("    hop_seconds: 1.0")
    path.write_text("\n".join(lines) + "\n")


def test_run_replay_real_clips_flags_the_anomaly(tmp_path, state):
    cfg = tmp_path / "c.yaml"
    write_config(cfg, state, {"fan01": {"file": DEMO / "replay", "realtime": "false"}})
    r = cli("run", "--config", cfg, "--scores", block_torch=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "fan01: ALARM START" in out and "fan01: ALARM END" in out
    assert "fan01: state normal" in out
    # the first alarm starts after the two normal clips (20 s) begin to give way to the anomaly
    assert "ALARM" not in out.split("fan01: ALARM START")[0]


def test_two_machines_and_an_uncalibrated_one_that_says_so(tmp_path, state):
    eight = shared("mimii_8ch")
    cfg = tmp_path / "c.yaml"
    write_config(
        cfg,
        state,
        {
            "fan01": {"file": eight / "fan_id_00_normal_00000000.wav", "realtime": "false", "channel": 3},
            "pump9": {"file": DATA / "valve" / "test", "realtime": "false"},
        },
    )
    r = cli("run", "--config", cfg, block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "pump9: state uncalibrated (no bank: run edge-agent calibrate)" in r.stdout
    assert "machine pump9 is UNCALIBRATED" in r.stderr
    assert "fan01: state normal" in r.stdout


def test_run_without_machines_or_with_bad_config_exits_2(tmp_path, state):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("machines:\n  fan01:\n    input: {file: /nonexistent/x.wav}\n")
    r = cli("run", "--config", cfg)
    assert r.returncode == 2 and "/nonexistent/x.wav: no such file or folder (machines.fan01.input.file)" in r.stderr
    cfg.write_text("machines:\n  fan01:\n    hop_second: 1\n")
    r = cli("run", "--config", cfg)
    assert r.returncode == 2 and "machines.fan01.hop_second: unknown key" in r.stderr


def test_importing_the_runtime_does_not_import_torch():
    code = textwrap.dedent("""
        import sys
        import edge_agent.cli, edge_agent.runtime.agent, edge_agent.engine, edge_agent.audio.replay
        import edge_agent.scoring.bank
        import edge_agent.cli.demo, edge_agent.runtime.daemon
        import calibration.service, calibration.evaluate
        assert 'torch' not in sys.modules, 'torch was imported'
        print('ok')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_demo_runs_without_torch():
    r = cli("demo", block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "ALARM START" in r.stdout
    summary = r.stdout.split("4) summary per clip:")[1]
    assert "alarm 1 from" in summary
