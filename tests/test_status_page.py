"""The status page: its HTTP API in-process, then driven in a real headless Chromium (the
distribution's chromium and chromium-driver packages, no browser download) against an agent that
replays real anomalous clips and publishes to a real Mosquitto."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request

import pytest

from tests.brokers import broker, wait_for  # noqa: F401 - fixture
from tests.conftest import DEMO
from tests.test_commands import Operator, Running
from tests.test_mqtt import _state_with_banks_of, agent_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _anomalous(tmp_path):
    d = tmp_path / "anomalous"
    d.mkdir()
    for f in sorted((DEMO / "replay").glob("0[23]_anomaly_*.wav")):
        (d / f.name).symlink_to(f)
    return d


def _web_config(tmp_path, calibrated, port, password: str | None):
    state = _state_with_banks_of(calibrated, tmp_path)
    web = '{listen: "127.0.0.1:0"}'
    if password is not None:
        (tmp_path / "web.pass").write_text(password + "\n")
        web = f'{{listen: "127.0.0.1:0", password_file: {tmp_path / "web.pass"}}}'
    extra = f"  commands: true\nevidence: {{pre_seconds: 4, post_seconds: 2}}\nweb: {web}\n"
    cfg = agent_config(tmp_path / "c.yaml", state, port, _anomalous(tmp_path), extra, loop=True, continuous=True)
    return cfg, state


def _get(url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_the_page_api_is_read_only_without_a_password_and_serves_only_evidence(broker, calibrated, tmp_path):  # noqa: F811
    cfg, _ = _web_config(tmp_path, calibrated, broker.port, password=None)
    run = Running(cfg, learning=False)
    url = run.daemon.page.url
    try:

        def last_alarm():
            alarms = json.loads(_get(url + "/api/status")[2])["machines"][0]["alarms"]
            return alarms[0] if alarms else None

        # the alarm is on the page, and its evidence is written (post_seconds after its start)
        assert wait_for(lambda: last_alarm() is not None and last_alarm()["evidence"]["ready"], 120)
        status, headers, body = _get(url + "/api/status")
        s = json.loads(body)
        assert status == 200 and s["node"] == "testnode" and s["controls"] is False
        m = s["machines"][0]
        assert m["machine"] == "fan01" and m["threshold"] > 0 and m["alarm"]["alarm_id"] is not None
        assert "default-src 'self'" in headers["Content-Security-Policy"]  # nothing from any other origin
        pts = json.loads(_get(url + "/api/machines/fan01/scores")[2])["points"]
        assert len(pts) >= 3 and all(len(p) == 4 for p in pts)
        newer = json.loads(_get(url + f"/api/machines/fan01/scores?after={pts[-1][0]}")[2])["points"]
        assert all(p[0] > pts[-1][0] for p in newer)
        a = last_alarm()
        status, headers, wav = _get(url + a["evidence"]["wav_url"])
        assert status == 200 and wav[:4] == b"RIFF" and headers["Content-Type"].startswith("audio/")
        assert _get(url + "/evidence/fan01/..%2Fbank.npz")[0] == 404
        assert _get(url + "/evidence/nosuch/" + "0" * 32 + ".wav")[0] == 404
        assert _get(url + "/api/machines/nosuch/scores")[0] == 404
        # the enrolled normal clips, for A/B listening: served, and nothing else from that folder
        assert m["normal_clips"] == [f"/normal/fan01/normal-{i}.wav" for i in (1, 2, 3)]
        status, headers, clip = _get(url + m["normal_clips"][0])
        assert status == 200 and clip[:4] == b"RIFF" and headers["Content-Type"].startswith("audio/")
        assert _get(url + "/normal/fan01/..%2Fbank.npz")[0] == 404
        assert _get(url + "/normal/nosuch/normal-1.wav")[0] == 404
        trend = json.loads(_get(url + "/api/machines/fan01/trend?range=week")[2])
        assert trend["hours"] and trend["hours"][-1][1] is not None  # the hour under way
        assert _get(url + "/api/machines/fan01/trend?range=year")[0] == 400
        body = json.dumps({"command": "shelve", "minutes": 5}).encode()
        status, _, answer = _get(url + "/api/machines/fan01/command", body, {"Authorization": "Bearer x"})
        assert status == 403 and "web.password_file" in json.loads(answer)["error"]
        assert json.loads(_get(url + "/api/status")[2])["machines"][0]["state"] != "shelved"
    finally:
        run.stop()
    assert _get_fails(url)


def _get_fails(url: str) -> bool:
    """After stop the page is gone (the server closed its port)."""
    try:
        urllib.request.urlopen(url + "/api/status", timeout=2)
    except (urllib.error.URLError, ConnectionError, OSError):
        return True
    return False


@pytest.fixture()
def chromium(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (scripts/run-tests installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download a driver or browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio"):
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_in_a_real_browser_an_alarm_appears_its_evidence_plays_and_acknowledge_reaches_the_broker(
    broker,  # noqa: F811
    calibrated,
    tmp_path,
    chromium,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cfg, _ = _web_config(tmp_path, calibrated, broker.port, password="plant-floor-7")
    op = Operator(broker.port)
    run = Running(cfg, learning=False)
    try:
        chromium.get(run.daemon.page.url)
        wait = WebDriverWait(chromium, 120, poll_frequency=0.2)
        card = wait.until(lambda d: d.find_element(By.ID, "machine-fan01"))
        assert card.find_element(By.CSS_SELECTOR, ".name").text == "fan01"
        # the alarm of the replayed anomaly shows up, with the score chart filling
        wait.until(lambda d: card.get_attribute("data-alarm-state") == "unacknowledged")
        assert card.find_element(By.CSS_SELECTOR, ".state").text == "anomaly"
        # what changed, against the enrolled sound (the bank has a band profile)
        changed = wait.until(lambda d: card.find_element(By.CSS_SELECTOR, ".alarms li .changed").text)
        assert re.match(r"changed: \d+ Hz [+-]", changed), changed
        assert int(card.get_attribute("data-points")) > 3
        # its evidence: the WAV loads in the audio element, the spectrogram is drawn
        audio = wait.until(lambda d: card.find_element(By.CSS_SELECTOR, ".alarms li .evidence audio"))
        wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1", audio))
        duration = chromium.execute_script("return arguments[0].duration", audio)
        assert 5.0 <= duration <= 7.0  # pre 4 s + post 2 s
        # and the enrolled normal sound beside it, to compare
        normal = card.find_element(By.CSS_SELECTOR, ".normal audio")
        wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1", normal))
        assert 9.0 <= chromium.execute_script("return arguments[0].duration", normal) <= 10.5
        img = card.find_element(By.CSS_SELECTOR, ".alarms li .evidence img")
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img))

        # a wrong password changes nothing
        chromium.find_element(By.ID, "password").send_keys("guess")
        card.find_element(By.CSS_SELECTOR, "button[data-command='acknowledge']").click()
        result = card.find_element(By.CSS_SELECTOR, ".result")
        wait.until(lambda d: "wrong or missing password" in result.text)
        assert op.state()["alarm"]["state"] == "unacknowledged"

        pw = chromium.find_element(By.ID, "password")
        pw.clear()
        pw.send_keys("plant-floor-7")
        card.find_element(By.CSS_SELECTOR, "button[data-command='acknowledge']").click()
        wait.until(lambda d: "acknowledged" in result.text and "error" not in result.get_attribute("class"))
        # the broker sees it: the retained state says who acknowledged
        assert wait_for(lambda: (op.state().get("alarm") or {}).get("acknowledged_by") == "web", 20)
        assert op.state()["alarm"]["state"] == "acknowledged"
        wait.until(lambda d: card.get_attribute("data-alarm-state") == "acknowledged")

        # the alarm's payload on the broker names its evidence's URL on the page, which serves it
        start = next(a for a in op.payloads("fan01/alarm") if a["event"] == "start")
        url = start["evidence"]["wav_url"]
        assert url == f"{run.daemon.page.url}/evidence/fan01/{start['alarm_id']}.wav"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.read(4) == b"RIFF"

        # shelve from the page: the machine says so, on the page and on the broker
        card.find_element(By.CSS_SELECTOR, "button[data-command='shelve']").click()
        wait.until(lambda d: card.get_attribute("data-state") == "shelved")
        assert wait_for(lambda: op.state()["state"] == "shelved" and op.state()["shelved_until"], 20)
        # no script error, nothing refused by the page's security policy, nothing missing (the one
        # expected failure is the wrong password's 401)
        errors = [
            e for e in chromium.get_log("browser") if e["level"] == "SEVERE" and "(Unauthorized)" not in e["message"]
        ]
        assert not errors, errors
    finally:
        run.stop()
        op.sub.close()
