"""The status page with a plant of 20 machines: how long the overview takes to load in headless
Chromium (from navigation to the first complete poll drawn), the agent's memory while the page is
polled, and screenshots of the overview and of one machine's detail for the docs.

    python benchmarks/page.py        # table, benchmarks/results/page.json, docs/images/*.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.network import _children, _cpu_pss, start_agent, write_results  # noqa: E402
from benchmarks.speed import DEMO, _state_dir_with_bank  # noqa: E402
from edge_agent.model.bundle import Bundle  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
              "--window-size=1280,900"):  # fmt: skip
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--machines", type=int, default=20)
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "page.json")
    p.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    a = p.parse_args(argv)
    if not (CHROMIUM and CHROMEDRIVER):
        print("chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
        return 2
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.brokers import free_port

    tmp = Path(tempfile.mkdtemp(prefix="page-"))
    bundle = Bundle.load("default")
    machines = [f"{kind}{i:02d}" for i, kind in zip(range(a.machines), ["fan", "pump", "valve", "gearbox"] * 99)]
    _state_dir_with_bank(tmp, bundle, machines)
    port = free_port()
    clips = sorted((DEMO / "replay").glob("*.wav"))
    cfg = {
        "state_dir": str(tmp),
        "engine": "cpu",
        "web": {"listen": f"127.0.0.1:{port}"},
        "machines": {
            m: {"input": {"file": str(clips[i % len(clips)]), "realtime": True, "loop": True}}
            for i, m in enumerate(machines)
        },
    }
    agent = start_agent(tmp, cfg)
    url = f"http://127.0.0.1:{port}/"
    loads, pss = [], []
    try:
        time.sleep(25.0)  # start-up and the first alarms of the looped anomalous clips
        driver = _browser(tmp / "profile")
        try:
            for _ in range(a.loads):
                driver.get("about:blank")
                driver.get(url)
                WebDriverWait(driver, 30, poll_frequency=0.05).until(
                    lambda d: d.execute_script("return window.edgeAgentLoadedMs || null")
                )
                loads.append(driver.execute_script("return window.edgeAgentLoadedMs"))
                pss.append(_cpu_pss(agent.pid)[1])
                time.sleep(2.0)
            a.images.mkdir(parents=True, exist_ok=True)
            time.sleep(4.0)
            driver.save_screenshot(str(a.images / "page-overview.png"))
            driver.find_element(By.CSS_SELECTOR, f".tile[data-machine='{machines[1]}']").click()
            WebDriverWait(driver, 30).until(
                lambda d: (
                    d.find_element(By.ID, f"machine-{machines[1]}").is_displayed()
                    and int(d.find_element(By.ID, f"machine-{machines[1]}").get_attribute("data-points") or 0) > 5
                )
            )
            time.sleep(2.5)
            driver.save_screenshot(str(a.images / "page-detail.png"))
            for _ in range(5):
                time.sleep(2.0)
                pss.append(_cpu_pss(agent.pid)[1])
        finally:
            driver.quit()
        children = _children(agent.pid)
    finally:
        agent.terminate()
        agent.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    r = {
        "machines": a.machines,
        "load_ms_median": round(statistics.median(loads), 1),
        "load_ms_max": round(max(loads), 1),
        "loads": [round(x, 1) for x in loads],
        "agent_pss_mb_max": round(max(pss), 1),
        "agent_children": len(children),
    }
    print("| machines | page load (median of {}) | slowest | agent memory while polled (PSS, max) |".format(a.loads))
    print("|---|---|---|---|")
    print(f"| {a.machines} | {r['load_ms_median']} ms | {r['load_ms_max']} ms | {r['agent_pss_mb_max']} MB |")
    write_results(a.out, **r)
    print(f"written {a.out} and {a.images}/page-overview.png, page-detail.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
