"""Typed config: unknown keys and bad values are named by their key path."""

import pytest

from edge_agent.config import ConfigError, default_state_dir, load_config, parse_config


def test_defaults_and_relative_files(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("node_id: n1\nmachines:\n  fan01:\n    input: {file: clips}\n")
    cfg = load_config(p)
    assert cfg.node_id == "n1" and cfg.model == "default" and cfg.engine == "auto"
    m = cfg.machines["fan01"]
    assert m.input.file == (tmp_path / "clips").resolve()
    assert m.hop_seconds == 1.0 and (m.alarm.raise_after, m.alarm.of_last, m.alarm.clear_after) == (3, 5, 5)
    assert cfg.mqtt is None


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"machines\.fan01\.input\.devcie: unknown key"):
        parse_config({"machines": {"fan01": {"input": {"devcie": "USB"}}}})
    with pytest.raises(ConfigError, match=r"mqtt\.pasword: unknown key"):
        parse_config({"mqtt": {"pasword": "secret"}})


def test_bad_values_are_explained():
    with pytest.raises(ConfigError, match=r"machines\.fan01\.hop_seconds"):
        parse_config({"machines": {"fan01": {"hop_seconds": -1}}})
    with pytest.raises(ConfigError, match="raise_after .* cannot exceed of_last"):
        parse_config({"machines": {"fan01": {"alarm": {"raise_after": 6, "of_last": 5}}}})
    with pytest.raises(ConfigError, match="either 'device' or 'file'"):
        parse_config({"machines": {"fan01": {"input": {"device": 1, "file": "x.wav"}}}})
    with pytest.raises(ConfigError, match="engine"):
        parse_config({"engine": "gpu"})
    with pytest.raises(ConfigError, match="machine id"):
        parse_config({"machines": {"fan 01/x": {}}})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["a"])


def test_yaml_errors_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("machines: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")


def test_state_dir_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert default_state_dir() == tmp_path / "a"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert default_state_dir() == tmp_path / "x" / "edge-agent"
    assert default_state_dir(tmp_path / "e") == tmp_path / "e"
