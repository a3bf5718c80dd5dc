"""Typed configuration shared by every command.

One YAML file, validated on load with pydantic; unknown keys are errors that name their key path
(``machines.fan01.input.devcie``) so a typo never silently becomes a default. Secrets are never
inline: the MQTT password comes from a file or from systemd credentials.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.config_input import DAY, InputConfig
from edge_agent.config_values import check_host, check_listen, check_topic_levels
from edge_agent.errors import UserError

DEFAULT_CONFIG_PATHS = ("/etc/edge-agent/config.yaml",)
SMOOTH_SECONDS = 4.0  # running median over 4 s of hops (5 windows at hop 1 s)
# Bounds of what the agent accepts (hostile or mistyped values are refused at load, exit 2)
MIN_HOP_SECONDS, MAX_HOP_SECONDS = 0.05, 60.0
MAX_RULE_WINDOWS = 1000
MIN_LEARN_SECONDS, MAX_LEARN_SECONDS = 60.0, 90 * DAY
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(UserError):
    """A configuration problem; the message names the key and says what to do."""


class _Strict(BaseModel):
    # allow_inf_nan=False: every number is finite (.inf and .nan are valid YAML floats)
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class AlarmConfig(_Strict):
    raise_after: int = Field(default=3, ge=1, le=MAX_RULE_WINDOWS)
    of_last: int = Field(default=5, ge=1, le=MAX_RULE_WINDOWS)
    clear_after: int = Field(default=5, ge=1, le=MAX_RULE_WINDOWS)
    update_seconds: float = Field(default=30.0, gt=0, le=DAY)  # re-send 'update' while an alarm lasts
    # Scores are smoothed over this horizon before the raise/clear rule (chosen with benchmarks/stream.py).
    smooth: Literal["median", "mean"] = "median"
    smooth_seconds: float = Field(default=SMOOTH_SECONDS, ge=0, le=600)
    # calibrate's default threshold: this many false alarms a week on normal sound, estimated with the rule above
    false_alarms_per_week: float = Field(default=1.0, gt=0, le=10_080)

    def smooth_windows(self, hop_seconds: float) -> int:
        return max(1, int(round(self.smooth_seconds / hop_seconds)) + 1) if self.smooth_seconds > 0 else 1

    @model_validator(mode="after")
    def _k_of_n(self) -> "AlarmConfig":
        if self.raise_after > self.of_last:
            raise ValueError(f"raise_after ({self.raise_after}) cannot exceed of_last ({self.of_last})")
        return self


class MachineConfig(_Strict):
    input: InputConfig = Field(default_factory=InputConfig)
    # at least MIN_HOP_SECONDS: a smaller hop scores windows faster than any engine can (and grows memory)
    hop_seconds: float = Field(default=1.0, ge=MIN_HOP_SECONDS, le=MAX_HOP_SECONDS)
    alarm: AlarmConfig = Field(default_factory=AlarmConfig)
    k: int = Field(default=1, ge=1, le=1000)  # k-NN: mean of the k smallest distances
    # A window this many dB below the quietest enrolled windows means the machine is off (not scored).
    off_margin_db: Optional[float] = Field(default=20.0, gt=0, le=200)
    # Commissioning: a machine without a bank learns from its own sound for this long (e.g. 24h), then monitors.
    learn: Optional[str] = None

    @field_validator("learn")
    @classmethod
    def _learn(cls, v):
        if v is not None:
            learn_seconds(parse_duration(v), repr(v))
        return v


class TLSConfig(_Strict):
    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    insecure: bool = False  # skip host-name verification (self-signed lab brokers only)


class HomeAssistantConfig(_Strict):
    enabled: bool = True
    discovery_prefix: str = "homeassistant"

    @field_validator("discovery_prefix")
    @classmethod
    def _discovery(cls, v: str) -> str:
        return check_topic_levels(v, "discovery prefix", "'homeassistant'")

    shelve_minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)  # what the shelve switch sends (with commands)


class MQTTConfig(_Strict):
    host: str = Field(default="localhost", min_length=1, max_length=253)
    port: int = Field(default=1883, gt=0, lt=65536)
    username: Optional[str] = None
    password_file: Optional[Path] = None
    tls: Optional[TLSConfig] = None
    topic_prefix: str = "edge-agent"
    qos: Literal[0, 1, 2] = 1
    keepalive: int = Field(default=30, ge=5, le=65535)
    score_interval_seconds: float = Field(default=10.0, ge=0, le=DAY)
    reconnect_max_seconds: float = Field(default=5.0, ge=1, le=300)  # cap of the reconnect back-off
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    # Operator commands on <prefix>/<node>/<machine>/command (acknowledge, shelve, learn, threshold).
    # Off by default: anyone who may publish there can silence a machine (docs/mqtt.md: broker ACLs).
    commands: bool = False

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return check_topic_levels(v, "topic prefix", "'edge-agent' or 'plant1/edge-agent'")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)


class OutboxConfig(_Strict):
    max_rows: int = Field(default=100_000, ge=10, le=10_000_000)
    max_age_days: float = Field(default=7.0, gt=0, le=3650)


class MetricsConfig(_Strict):
    listen: str = "127.0.0.1:9108"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v, "9108")


class WebConfig(_Strict):
    """The local status page: every machine, its scores, alarms and evidence (off unless configured)."""

    listen: str = "127.0.0.1:8080"
    # acknowledge/shelve on the page need this password (or the systemd credential web_password);
    # without one the page is read-only
    password_file: Optional[Path] = None
    url: Optional[str] = None  # how subscribers reach the page, for evidence URLs; default: from listen

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v, "8080")

    @field_validator("url")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} must start with http:// or https://, e.g. 'http://line3-jetson:8080'")
        return v.rstrip("/") if v else v


class EvidenceConfig(_Strict):
    """What each alarm keeps to be heard back: the audio around its start as a WAV and a spectrogram
    PNG with the window scores and the threshold, under <state_dir>/evidence/<machine>/."""

    enabled: bool = True
    pre_seconds: float = Field(default=10.0, ge=0, le=300)  # audio before the alarm's start
    post_seconds: float = Field(default=10.0, ge=0, le=300)  # and after it
    max_mb: float = Field(default=200.0, gt=0, le=1_000_000)  # all evidence together; the oldest files go first


class Config(_Strict):
    node_id: str = Field(default_factory=lambda: default_node_id())
    model: str = "default"
    engine: Literal["auto", "cpu", "cuda", "tensorrt", "trt"] = "auto"
    state_dir: Optional[Path] = None
    machines: dict[str, MachineConfig] = Field(default_factory=dict)
    mqtt: Optional[MQTTConfig] = None
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    metrics: Optional[MetricsConfig] = None
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    web: Optional[WebConfig] = None  # absent: no status page
    status_interval_seconds: float = Field(default=30.0, gt=0, le=1e9)  # 1e9: never, in effect

    @field_validator("machines")
    @classmethod
    def _machine_ids(cls, v: dict) -> dict:
        for name in v:
            check_machine_id(name)
        return v

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str) -> str:
        # One MQTT topic level and part of Home Assistant ids: no separators or wildcards.
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v):
            raise ValueError(
                f"node id {v!r} must be 1-64 characters of letters, digits, '_', '.', '-' and start with a "
                "letter or digit (it becomes one MQTT topic level: no '/', '#' or '+')"
            )
        return v

    def resolved_state_dir(self) -> Path:
        return default_state_dir(self.state_dir)


def learn_seconds(seconds: float, given: str = "") -> float:
    """``seconds`` if a learning period may last that long, else ValueError (naming ``given``)."""
    if not MIN_LEARN_SECONDS <= seconds <= MAX_LEARN_SECONDS:
        raise ValueError(
            f"{given + ': ' if given else ''}a learning period lasts {MIN_LEARN_SECONDS:.0f} s to "
            f"{MAX_LEARN_SECONDS / 86400:.0f} days (e.g. 24h): shorter gives the threshold too little of the "
            "machine's sound"
        )
    return seconds


def parse_duration(text) -> float:
    """'24h', '90m', '3600s', '2d' or a number of seconds -> seconds."""
    import re

    m = re.fullmatch(r"\s*(\d{1,9}(?:\.\d{1,9})?)\s*([smhd]?)\s*", str(text)[:100])
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: use e.g. 24h, 90m, 2d or 3600s")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def default_node_id() -> str:
    """The host name, made into a valid node id (one topic level)."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).lstrip("_.-")[:64]
    return name or "edge-agent"


def check_machine_id(name: str) -> str:
    """Machine ids become MQTT topic levels and file names: keep them to a safe alphabet."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(
            f"machine id {name!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return name


def default_state_dir(explicit: Optional[Path] = None) -> Path:
    """The state directory rule of the architecture doc."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get("STATE_DIRECTORY"):
        # systemd may pass several, colon-separated; the first is ours.
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / "edge-agent"
    return Path.home() / ".local" / "state" / "edge-agent"


def usable_state_dir(path: Path, where: str = "state_dir in the config") -> Path:
    """``path`` created if missing and writable, or a ``ConfigError`` that says what to do: banks,
    the outbox, alarm evidence and learning periods all live there, and the agent must not start
    without a place to keep its alarms."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable by this user")
    except OSError as e:
        raise ConfigError(
            f"state_dir {path}: cannot use it ({e.strerror or e}); set {where} to a folder this user can write, "
            "e.g. /var/lib/edge-agent (systemd: StateDirectory=edge-agent)"
        ) from None
    return path


def default_config_path() -> Optional[Path]:
    candidates = [Path(p) for p in DEFAULT_CONFIG_PATHS]
    xdg = os.environ.get("XDG_CONFIG_HOME")
    candidates.append(
        Path(xdg) / "edge-agent" / "config.yaml" if xdg else Path.home() / ".config" / "edge-agent" / "config.yaml"
    )
    for c in candidates:
        if c.is_file():
            return c
    return None


def _format_errors(err: ValidationError, path: Path | str) -> str:
    lines = [f"invalid config {path}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (check the spelling; see docs/config.md for the keys)")
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid config {source}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def require_machines(cfg: Config, source: str = "the config") -> Config:
    """Commands that listen (run) need at least one machine."""
    if not cfg.machines:
        raise ConfigError(
            f"{source} has no machines: add one under 'machines:', e.g.\n"
            'machines:\n  fan01:\n    input: {device: "USB Audio"}\n(see docs/config.md)'
        )
    return cfg


def realtime_only(cfg: Config) -> bool:
    """Every input delivers its audio as it is recorded (a device, or a replay in real time), so the
    engine runs a few windows a second rather than back to back."""
    return all(mc.input.file is None or mc.input.realtime for mc in cfg.machines.values())


def load_config(path: Optional[Path | str] = None, required: bool = True) -> Config:
    """Load and validate a config file; with no path, use the default locations.

    ``required=False`` returns an all-defaults config when no file exists (commands that need no
    config), but a path that was given explicitly must exist.
    """
    if path is None:
        path = default_config_path()
        if path is None:
            if required:
                raise ConfigError(
                    "no config file: pass --config PATH, or create /etc/edge-agent/config.yaml "
                    "or $XDG_CONFIG_HOME/edge-agent/config.yaml (see docs/config.md)"
                )
            return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (pass an existing file with --config)")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES >> 20} MiB; is it the right file?")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; is it the right file?") from None
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read it ({e.strerror or e})") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a config") from None
    cfg = parse_config(data, str(path))
    # Relative input files are relative to the config file, as users expect.
    for m in cfg.machines.values():
        if m.input.file is not None and not m.input.file.is_absolute():
            m.input.file = (path.parent / m.input.file).resolve()
    return cfg
