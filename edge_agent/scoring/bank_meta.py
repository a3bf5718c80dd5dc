"""The bank's metadata as a typed contract: what calibration and the learning period write into a
bank and the runtime reads back (threshold, score head, level range, how the threshold was
fitted). Checked when a bank is written and when it is loaded, like the bundle manifest: an
unknown key or a value of the wrong type is refused with what to do, never half-read."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

BANK_FORMAT = 1


class LevelRange(BaseModel):
    """The enrolled windows' level (dBFS): far below ``low`` the machine counts as off."""

    model_config = ConfigDict(extra="forbid")
    low: float
    median: float
    high: float
    windows: int = Field(ge=0)


class BandProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_rate: int = Field(gt=0)
    centres_hz: list[float]
    median_db: list[float]
    spread_db: list[float]


class BankMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int
    model_sha256: str
    model_name: str = ""
    model_version: str = ""
    threshold: Optional[float] = None
    k: int = Field(default=1, ge=1)
    normalise_domains: bool = False
    domain_stats: dict[str, list[float]] = Field(default_factory=dict)
    # written by an enrolment (calibration/enrol.py)
    version: int = Field(default=0, ge=0)
    created: Optional[str] = None
    agent_version: Optional[str] = None
    fit: Optional[dict[str, Any]] = None
    threshold_rule: Optional[dict[str, Any]] = None
    expected_alarms_per_day: Optional[float] = None
    alarm_rate: Optional[dict[str, Any]] = None
    enrolled_windows: Optional[dict[str, int]] = None
    enrolled_clips: Optional[dict[str, int]] = None
    n_centres: Optional[int] = None
    keep_source_samples: Optional[bool] = None
    projection_dim: Optional[int] = None
    heard_in_training: list[str] = Field(default_factory=list)
    training_overlap: Optional[dict[str, Any]] = None
    # the score head (edge_agent/scoring/heads: a head's spec, or an ensemble of them); absent: the k-NN
    score: Optional[dict[str, Any]] = None
    # written by calibrate (calibration/service.py) and the learning period (calibration/learning.py)
    skipped_clips: Optional[int] = None
    outlier_clips: Optional[dict[str, list[str]]] = None
    levels_dbfs: Optional[LevelRange] = None
    # third-octave band profile of the enrolled windows (edge_agent/scoring/bands.py): what an alarm explains
    bands: Optional[BandProfile] = None
    learned: Optional[dict[str, Any]] = None


def check_meta(meta: dict, where: str) -> None:
    """Raise ValueError naming every key that is unknown or of the wrong type."""
    try:
        BankMeta.model_validate(meta)
    except ValidationError as e:
        parts = []
        for err in e.errors()[:6]:
            loc = ".".join(str(x) for x in err["loc"])
            parts.append(f"{loc}: unknown key" if err["type"] == "extra_forbidden" else f"{loc}: {err['msg']}")
        raise ValueError(f"{where}: " + "; ".join(parts)) from None
