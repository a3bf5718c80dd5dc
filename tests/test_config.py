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
    with pytest.raises(ConfigError, match="give one of 'device', 'file' or 'url'"):
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


def test_every_config_key_is_in_the_reference():
    """docs/config.md names every key of the typed config (a key nobody can find is a key nobody sets)."""
    import typing

    from pydantic import BaseModel

    from edge_agent.config import Config
    from tests.conftest import ROOT

    doc = (ROOT / "docs" / "config.md").read_text()
    rows = [ln for ln in doc.splitlines() if ln.startswith("| `")]

    def models(t):
        return [a for a in typing.get_args(t) or (t,) if isinstance(a, type) and issubclass(a, BaseModel)]

    def walk(model, prefix):
        for name, f in model.model_fields.items():
            path = f"{prefix}{name}"
            yield path
            t = f.annotation
            if typing.get_origin(t) is dict:
                t, path = typing.get_args(t)[1], f"{path}.<id>"
            for sub in models(t):
                yield from walk(sub, path + ".")

    missing = []
    for path in walk(Config, ""):
        head, _, leaf = path.rpartition(".")
        # a row names the key (or a longer key under it), or its parent's path with the leaf beside it
        if not any(f"`{path}" in r or (f"`{head}." in r and f"`{leaf}`" in r) for r in rows):
            missing.append(path)
    assert not missing, f"docs/config.md does not name: {missing}"
