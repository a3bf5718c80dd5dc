"""The status page as a plant overview, in headless Chromium: 20 machines as tiles (state, severity,
alarm state, last alarm, a sparkline of the last day), a machine's detail on click with its hourly
trend over a day, a week or a month, and back. The trends are real rows in trends.sqlite: one
machine drifted toward its threshold over three days, so it starts in ``watch``."""

from __future__ import annotations

import shutil
import time

import yaml

from edge_agent.state.paths import bank_path
from edge_agent.trends.store import Hour, TrendStore
from tests.conftest import DEMO
from tests.test_commands import Running
from tests.test_status_page import chromium  # noqa: F401 - fixture

MACHINES = [f"{kind}{i:02d}" for i, kind in zip(range(20), ["fan", "pump", "valve", "gearbox"] * 5)]


def _history(store: TrendStore, machine: str, ratios: list[float], threshold: float = 0.2) -> None:
    now = int(time.time()) // 3600 * 3600
    day0 = now - now % 86400 - len(ratios) * 86400
    for d, r in enumerate(ratios):
        for hh in range(24):
            store.put(Hour(machine, day0 + d * 86400 + hh * 3600, 150, r * threshold, 2 * r * threshold, threshold,
                           -30.0, 0, {"normal": 3600.0}))  # fmt: skip


def test_twenty_machines_as_tiles_a_detail_on_click_and_back(calibrated, tmp_path, chromium):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    st = tmp_path / "st"
    for m in MACHINES[:4]:  # four calibrated, the others still to enrol
        bank_path(st, m).parent.mkdir(parents=True)
        shutil.copy(bank_path(calibrated, "fan01"), bank_path(st, m))
    store = TrendStore(st / "trends.sqlite")
    _history(store, "pump01", [0.55, 0.6, 0.7])  # drifting: watch
    _history(store, "fan00", [0.2, 0.2, 0.2])
    store.close()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(st),
                "engine": "cpu",
                "web": {"listen": "127.0.0.1:0"},
                "machines": {m: {"input": {"file": str(DEMO / "replay"), "loop": True}} for m in MACHINES},
            },
            sort_keys=False,
        )
    )
    run = Running(cfg, learning=False)
    try:
        chromium.get(run.daemon.page.url)
        wait = WebDriverWait(chromium, 60, poll_frequency=0.1)
        wait.until(lambda d: d.execute_script("return window.edgeAgentLoadedMs || null"))
        tiles = chromium.find_elements(By.CSS_SELECTOR, "#overview .tile")
        assert [t.get_attribute("data-machine") for t in tiles] == MACHINES
        pump = next(t for t in tiles if t.get_attribute("data-machine") == "pump01")
        assert pump.get_attribute("data-severity") == "watch"
        assert pump.find_element(By.CSS_SELECTOR, ".severity").is_displayed()
        assert not tiles[0].find_element(By.CSS_SELECTOR, ".severity").is_displayed()
        # with 20 machines no detail is open, and none polls its scores
        assert not any(c.is_displayed() for c in chromium.find_elements(By.CSS_SELECTOR, "#machines .machine"))
        # the sparkline holds the last day's hours
        drawn = "return arguments[0].getContext('2d').getImageData(0, 0, 240, 44).data.some((v, i) => i % 4 == 3 && v)"
        assert chromium.execute_script(drawn, pump.find_element(By.CSS_SELECTOR, "canvas"))
        pump.click()
        detail = wait.until(lambda d: d.find_element(By.ID, "machine-pump01"))
        wait.until(lambda d: detail.is_displayed() and int(detail.get_attribute("data-trend-hours") or 0) >= 1)
        assert not chromium.find_element(By.ID, "overview").is_displayed()
        assert [c.get_attribute("data-machine") for c in chromium.find_elements(By.CSS_SELECTOR, "#machines .machine")
                if c.is_displayed()] == ["pump01"]  # fmt: skip
        detail.find_element(By.CSS_SELECTOR, "button[data-range='week']").click()
        wait.until(lambda d: int(detail.get_attribute("data-trend-hours")) >= 72)
        chromium.find_element(By.CSS_SELECTOR, "#back a").click()
        wait.until(lambda d: d.find_element(By.ID, "overview").is_displayed() and not detail.is_displayed())
        errors = [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        run.stop()
