"""An alarm says what changed: third-octave band levels of the enrolled sound kept in the bank, and
the bands of the window that raised the alarm that moved furthest from them. A tone injected at a
known frequency into real normal sound is named."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.audio.wavio import read_wav, write_wav
from edge_agent.scoring import bands
from edge_agent.scoring.bank import MemoryBank, bank_path
from tests.conftest import DEMO
from tests.test_run_replay import cli

SR = 16000


def _tone(x: np.ndarray, hz: float, db_below_peak: float = 20.0) -> np.ndarray:
    t = np.arange(len(x)) / SR
    return x + np.abs(x).max() * 10 ** (-db_below_peak / 20) * np.sin(2 * np.pi * hz * t)


def test_band_centres_follow_iso_266_below_nyquist():
    c = [n for n, _ in bands.centres(SR)]
    assert c[:4] == [25, 31.5, 40, 50] and c[-1] == 6300 and 1000 in c and 2000 in c
    exact = dict(bands.centres(48000))
    assert exact[1000] == pytest.approx(1000) and exact[2000] == pytest.approx(1995.26, abs=0.01)


@pytest.mark.parametrize("hz", [250, 1000, 4000])
def test_a_tone_in_noise_is_named_with_its_level(hz):
    rng = np.random.default_rng(0)
    prof = bands.profile(bands.band_levels(rng.normal(0, 0.05, (30, 2 * SR)), SR), SR)
    e = bands.explain(prof, _tone(rng.normal(0, 0.05, 2 * SR), hz, 6), level_change_db=2.0)
    assert e["bands"][0]["centre_hz"] == hz and e["bands"][0]["change_db"] > 6 and e["level_change_db"] == 2.0
    assert bands.describe(e).startswith(f"{hz:g} Hz +")


def test_calibrate_keeps_the_band_profile_and_a_tone_in_real_sound_is_named(sensitive):
    prof = MemoryBank.load(bank_path(sensitive, "fan01")).meta["bands"]
    assert prof["sample_rate"] == SR and len(prof["centres_hz"]) == len(prof["median_db"]) == 25
    assert min(prof["spread_db"]) >= bands.SPREAD_FLOOR_DB
    x, sr = read_wav(DEMO / "replay" / "01_normal_id_00_00000018.wav")
    window = x[: 2 * SR].mean(axis=1)
    plain = bands.explain(prof, window)
    assert max(abs(b["spreads"]) for b in plain["bands"]) < 6  # normal sound: nothing far out
    named = bands.explain(prof, _tone(window, 2000))
    assert named["bands"][0]["centre_hz"] == 2000 and named["bands"][0]["spreads"] > 6


def test_an_alarm_raised_by_a_tone_carries_its_explanation(sensitive, tmp_path):
    """End to end: an anomalous recording with a 4 kHz tone over it, replayed through the agent: the
    alarm's start names 4000 Hz first (console line and the payload in the outbox). The tone alone
    does not raise one: the embedding hears a fan with a tone as a fan."""
    from edge_agent.publish.outbox import Outbox

    x, sr = read_wav(DEMO / "replay" / "02_anomaly_id_00_00000002.wav")
    folder = tmp_path / "tone"
    folder.mkdir()
    write_wav(folder / "tone.wav", _tone(x.mean(axis=1), 4000, 0), sr)
    st = tmp_path / "st"
    (st / "machines").mkdir(parents=True)
    (st / "machines" / "fan01").symlink_to(sensitive / "machines" / "fan01")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"state_dir: {st}\nengine: cpu\nevidence: {{enabled: false}}\nmachines:\n  fan01:\n"
        f"    input: {{file: {folder}, realtime: false}}\n"
    )
    r = cli("run", "--config", cfg)
    assert r.returncode == 0, r.stderr
    start = next(ln for ln in r.stdout.splitlines() if "ALARM START" in ln)
    assert "changed: 4000 Hz +" in start
    rows = Outbox(st / "outbox.sqlite").pending(limit=100)
    payload = next(row.data for row in rows if row.kind == "alarm" and row.data["event"] == "start")
    assert payload["explanation"]["bands"][0]["centre_hz"] == 4000
    assert {"change_db", "spreads"} <= set(payload["explanation"]["bands"][0])


def test_the_spectrogram_carries_what_changed():
    import io

    from PIL import Image

    from edge_agent.alarms.evidence import render_png

    x = np.random.default_rng(1).normal(0, 0.1, 4 * SR).astype(np.float32)
    scores = [(2.0, 0.1), (3.0, 0.3), (4.0, 0.3)]
    plain, noted = io.BytesIO(), io.BytesIO()
    render_png(plain, x, SR, 3.0, scores, 0.2)
    render_png(noted, x, SR, 3.0, scores, 0.2, note="changed: 4000 Hz +35.7 dB")
    a, b = (np.asarray(Image.open(io.BytesIO(f.getvalue())).convert("RGB")) for f in (plain, noted))
    bottom = slice(a.shape[0] - 20, a.shape[0])
    assert (a[bottom] != b[bottom]).any() and (a[: a.shape[0] - 20] == b[: a.shape[0] - 20]).all()
