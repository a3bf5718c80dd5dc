"""The status page against hostile clients, with real HTTP on 127.0.0.1: idle connections time out,
a connection cap keeps threads and file descriptors bounded, evidence links are refused, password
guessing is one try a second for all clients together, the controls agree with the password file,
a failing route is counted, and every answer is strict JSON."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import replace

import pytest

from edge_agent.web import page
from tests.brokers import broker, wait_for  # noqa: F401 - fixture
from tests.test_commands import Running
from tests.test_status_page import _get, _web_config


def _strict(body: bytes):
    return json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in an answer"))


def _idle(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(10)
    return s


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_time_out_and_extra_ones_are_refused(broker, calibrated, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(page, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(page._Handler, "timeout", 3.0)
    cfg, _ = _web_config(tmp_path, calibrated, broker.port, password=None)
    run = Running(cfg, learning=False)
    url = run.daemon.page.url
    port = int(url.rsplit(":", 1)[1])
    try:
        held = [_idle(port) for _ in range(4)]  # every slot taken by a client that sends nothing
        time.sleep(0.2)
        extra = _idle(port)
        t = time.monotonic()
        assert _closed(extra) and time.monotonic() - t < 2.0  # refused at once, not after the 3 s timeout
        assert all(_closed(s) for s in held)  # each silent client is dropped after the timeout
        assert time.monotonic() - t < 15
        assert _get(url + "/api/status")[0] == 200  # and the page answers again
        assert run.daemon.page._server.refused >= 1 and run.thread.is_alive()
        for s in [*held, extra]:
            s.close()
    finally:
        run.stop()


def test_links_wrong_passwords_empty_passwords_failing_routes_and_nan(broker, calibrated, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(page, "AUTH_PAUSE", 0.4)
    cfg, state = _web_config(tmp_path, calibrated, broker.port, password="plant-floor-7")
    run = Running(cfg, learning=False)
    url = run.daemon.page.url
    try:
        # a link in the evidence folder to the password file is not served
        ev = state / "evidence" / "fan01"
        ev.mkdir(parents=True, exist_ok=True)
        (ev / ("a" * 32 + ".wav")).symlink_to(tmp_path / "web.pass")
        status, _, body = _get(url + "/evidence/fan01/" + "a" * 32 + ".wav")
        assert status == 404 and b"plant-floor-7" not in body

        # six clients guessing at once get one try every AUTH_PAUSE seconds, all together
        cmd = json.dumps({"command": "unshelve"}).encode()
        answers = []

        def guess(i):
            answers.append(_get(url + "/api/machines/fan01/command", cmd, {"Authorization": f"Bearer guess{i}"}))

        t = time.monotonic()
        threads = [threading.Thread(target=guess, args=(i,)) for i in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert time.monotonic() - t >= 5 * 0.4 - 0.05
        assert [a[0] for a in answers] == [401] * 6
        ok = _get(url + "/api/machines/fan01/command", cmd, {"Authorization": "Bearer plant-floor-7"})
        assert ok[0] in (200, 400) and _strict(ok[2])["command"] == "unshelve"  # checked: not a 401

        # a route that raises: a 500 in JSON, logged and counted, and the page goes on
        monkeypatch.setattr(run.daemon.page.board, "scores", lambda *a: 1 / 0)
        status, _, body = _get(url + "/api/machines/fan01/scores")
        assert status == 500 and "see its log" in _strict(body)["error"]
        assert run.agent.faults.counts == {"status page request": 1}

        # a value that is not a number is null in the answer, never a bare NaN
        real = type(run.agent.streams["fan01"]).stats
        nan = lambda self: replace(real(self), last_level_dbfs=float("nan"), last_score=float("inf"))  # noqa: E731
        monkeypatch.setattr(type(run.agent.streams["fan01"]), "stats", nan)
        status, _, body = _get(url + "/api/status")
        assert status == 200 and _strict(body)["machines"][0]["level_dbfs"] is None
    finally:
        run.stop()


def test_an_empty_password_file_means_no_controls_everywhere(broker, calibrated, tmp_path, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, "edge_agent.web")
    cfg, _ = _web_config(tmp_path, calibrated, broker.port, password="")
    run = Running(cfg, learning=False)
    url = run.daemon.page.url
    try:
        assert _strict(_get(url + "/api/status")[2])["controls"] is False
        assert "is empty: the page's controls are off" in caplog.text and "read-only" in caplog.text
        cmd = json.dumps({"command": "unshelve"}).encode()
        assert _get(url + "/api/machines/fan01/command", cmd, {"Authorization": "Bearer "})[0] == 403
    finally:
        run.stop()
    assert wait_for(lambda: not run.thread.is_alive(), 5)
