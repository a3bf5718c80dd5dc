"""The local status page: a small WSGI app (bottle) on a threaded stdlib server.

``web.listen`` (off unless configured). Everything it needs is served from the package (a plant
network has no internet: no CDN, and the Content-Security-Policy forbids any other origin).
Reading is open to whoever reaches the port; the controls (acknowledge, shelve, unshelve) need the
password from ``web.password_file`` or the systemd credential ``web_password``, sent as
``Authorization: Bearer <password>``, and run the same code as the MQTT commands.

Routes: ``/`` the page; ``/static/*`` its script and style; ``/api/status`` every machine;
``/api/machines/<m>/scores?after=<ts>`` the last hour of window scores; ``/evidence/<m>/<file>``
an alarm's WAV or PNG; ``POST /api/machines/<m>/command`` a command (JSON, as on MQTT).
"""

from __future__ import annotations

import hmac
import logging
import re
import socket
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle

from edge_agent import strict_json
from edge_agent.config import Config
from edge_agent.credentials import read_secret
from edge_agent.errors import UserError
from edge_agent.faults import Faults
from edge_agent.publish import events
from edge_agent.runtime.commands import MAX_PAYLOAD, CommandDesk
from edge_agent.runtime.sink import Sink, WindowEvent
from edge_agent.runtime.stream import MachineStream
from edge_agent.state.paths import evidence_dir, normal_dir
from edge_agent.web.board import StatusBoard, rounded

log = logging.getLogger("edge_agent.web")

STATIC = Path(str(resources.files("edge_agent.web") / "static"))
EVIDENCE_FILE = re.compile(r"[0-9a-f]{32}\.(wav|png)")
NORMAL_FILE = re.compile(r"normal-[0-9]\.wav")
MAX_CONNECTIONS = 32  # open at once; the page polls with one or two per browser
REQUEST_TIMEOUT = 30.0
AUTH_PAUSE = 1.0
TREND_RANGES = {"day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; media-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` at once (more are closed at once, so
    idle or slow clients cannot take every thread and file descriptor of the agent)."""

    daemon_threads = True
    allow_reuse_address = True
    faults: Optional[Faults] = None

    def server_activate(self) -> None:
        super().server_activate()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused = 0

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("status page: %d connection(s) refused: %d already open", self.refused, MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:  # logged and counted, not printed to stderr
        err = sys.exc_info()[1]
        if isinstance(err, (TimeoutError, ConnectionError)):  # a client that went quiet or away
            log.debug("status page: %s: %s", client_address, err)
        elif err is not None and self.faults is not None:
            self.faults.record("status page request", err)


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # seconds a connection may stay silent (the socket's timeout)

    def log_message(self, fmt, *args) -> None:  # requests go to the debug log, not stderr
        log.debug("%s %s", self.address_string(), fmt % args)


class StatusPage(Sink):
    """A sink of the agent (it keeps the board) that serves the page on its own threads. It reads
    the streams' live figures and hands the controls to the command desk, which runs them on the
    agent's thread."""

    def __init__(
        self,
        cfg: Config,
        streams: dict[str, MachineStream],
        model_info: dict,
        faults: Faults,
        commands: CommandDesk,
        trends=None,
    ):
        assert cfg.web is not None
        self.node, self.cfg = cfg.node_id, cfg.web
        self.streams, self.model_info, self.faults, self.commands = streams, model_info, faults, commands
        self.trends = trends  # trends.recorder.TrendRecorder: the hourly history of every machine
        self.board = StatusBoard(list(streams), {m: s.cfg.hop_seconds for m, s in streams.items()})
        web = cfg.web
        self.password = read_secret(web.password_file, "web_password", "web.password_file") or None
        if self.password is None and web.password_file is not None:
            log.warning("web.password_file %s is empty: the page's controls are off", web.password_file)
        self._auth_lock = threading.Lock()
        self._auth_closed_until = 0.0  # after a wrong password, every client waits (monotonic time)
        self.state_dir = cfg.resolved_state_dir()
        self.evidence_dir = evidence_dir(self.state_dir)
        self.app = self._routes()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """How others reach the page: ``web.url``, else from ``web.listen`` (all interfaces: the host name)."""
        if self.cfg.url:
            return self.cfg.url
        host, port = _host_port(self.cfg.listen)
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        if self._server is not None:
            port = self._server.server_port  # the one picked for port 0
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> None:
        host, port = _host_port(self.cfg.listen)
        server_class = _Server
        if ":" in host:
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            self._server = make_server(host, port, self.app, server_class=server_class, handler_class=_Handler)
        except OSError as e:
            raise UserError(f"web.listen {self.cfg.listen}: cannot listen there ({e.strerror})") from None
        faults = self.faults
        self._server.faults = faults
        self._stopping = threading.Event()
        serve = faults.supervise("status page", self._server.serve_forever, self._stopping)
        self._thread = threading.Thread(target=serve, name="status-page", daemon=True)
        self._thread.start()
        log.info(
            "status page on %s (%s)",
            self.url,
            "controls need the password" if self.password else "read-only: no web.password_file",
        )

    # -- sink ------------------------------------------------------------------------------------
    def handle(self, kind: str, machine: str, payload: dict) -> None:
        self.board.handle(kind, machine, payload)

    def window(self, ev: WindowEvent) -> None:
        self.board.window(ev)

    def close(self) -> None:
        if self._server is not None:
            self._stopping.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the app ---------------------------------------------------------------------------------
    def _routes(self) -> bottle.Bottle:
        app = bottle.Bottle()
        app.uninstall(bottle.JSONPlugin)  # for one that never writes NaN (JSON.parse refuses the document)
        app.install(bottle.JSONPlugin(json_dumps=strict_json.dumps))
        streams, board = self.streams, self.board

        def guarded(callback):  # a route that raises is logged and counted, and answered with a 500
            def route(*a, **kw):
                try:
                    return callback(*a, **kw)
                except bottle.HTTPResponse:
                    raise
                except Exception as e:  # noqa: BLE001
                    self.faults.record("status page request", e)
                    return _error(500, "the agent failed to answer; see its log")

            return route

        app.install(guarded)

        @app.hook("after_request")
        def _headers():
            for k, v in SECURITY_HEADERS.items():
                bottle.response.set_header(k, v)
            if bottle.request.path.startswith("/api/"):
                bottle.response.set_header("Cache-Control", "no-store")

        @app.get("/")
        def _index():
            return bottle.static_file("index.html", root=str(STATIC))

        @app.get("/static/<name:re:[a-z]+\\.(js|css|svg)>")
        def _static(name):
            return bottle.static_file(name, root=str(STATIC))

        @app.get("/api/status")
        def _status():
            return {
                "node": self.node,
                "model": {"name": self.model_info["name"], "version": self.model_info["version"]},
                "controls": self.password is not None,
                "ts": events.iso(time.time()),
                "machines": [self._machine(m, s) for m, s in streams.items()],
            }

        @app.get("/api/machines/<machine>/scores")
        def _scores(machine):
            if machine not in streams:
                return _error(404, f"unknown machine {machine!r}")
            try:
                after = float(bottle.request.query.get("after") or "-inf")
            except ValueError:
                return _error(400, "after: a number of seconds (unix time) is expected")
            return {"machine": machine, "points": board.scores(machine, after)}

        @app.get("/api/machines/<machine>/trend")
        def _trend(machine):
            if machine not in streams:
                return _error(404, f"unknown machine {machine!r}")
            span = TREND_RANGES.get(bottle.request.query.get("range") or "day")
            if span is None:
                return _error(400, f"range: one of {', '.join(TREND_RANGES)}")
            now = time.time()
            hours = self.trends.history(machine, now - span) if self.trends is not None else []
            return {"machine": machine, "since": now - span, "until": now, "hours": [_hour_row(h) for h in hours]}

        @app.get("/evidence/<machine>/<name>")
        def _evidence(machine, name):
            path = self.evidence_dir / machine / name
            if machine not in streams or not EVIDENCE_FILE.fullmatch(name) or path.is_symlink():
                return _error(404, "no such evidence")  # a link could point anywhere: only files the agent wrote
            return bottle.static_file(name, root=str(self.evidence_dir / machine))

        @app.get("/normal/<machine>/<name>")
        def _normal(machine, name):
            folder = normal_dir(self.state_dir, machine)
            if machine not in streams or not NORMAL_FILE.fullmatch(name) or (folder / name).is_symlink():
                return _error(404, "no such clip")
            return bottle.static_file(name, root=str(folder))

        @app.post("/api/machines/<machine>/command")
        def _command(machine):
            if self.password is None:
                return _error(403, "the controls are off: set web.password_file (or the web_password credential)")
            refused = self._authorise(bottle.request.get_header("Authorization", ""))
            if refused:
                return _error(*refused)
            raw = bottle.request.body.read(MAX_PAYLOAD + 1)
            result = self.commands.call(machine, raw, "web")
            bottle.response.status = 200 if result["ok"] else 404 if machine not in streams else 400
            return result

        return app

    def _authorise(self, given: str) -> Optional[tuple[int, str]]:
        """None for the right password; else (status, message). Checks run one at a time, and a
        wrong password holds the next check back ``AUTH_PAUSE`` seconds: guessing gets one try a
        second from all clients together (the connection cap bounds those waiting)."""
        with self._auth_lock:
            wait = self._auth_closed_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self.password.encode()):
                return None
            self._auth_closed_until = time.monotonic() + AUTH_PAUSE
        return 401, "wrong or missing password"

    def _machine(self, m: str, s) -> dict:
        st = s.stats()
        retained = self.board.state(m) or {}
        return {
            "machine": m,
            "state": retained.get("state", st.state),
            "reason": retained.get("reason", ""),
            "score": st.last_score,
            "threshold": st.threshold,
            "level_dbfs": st.last_level_dbfs,
            "learning_progress": st.learning_progress,
            "input": s.source.input_info(),
            "severity": retained.get("severity", "normal"),
            "severity_reason": retained.get("severity_reason", ""),
            "alarm": retained.get("alarm"),
            "shelved_until": retained.get("shelved_until"),
            "threshold_scale": retained.get("threshold_scale", 1.0),
            "alarms": [self._with_readiness(m, a) for a in self.board.recent_alarms(m)],
            # enrolled normal sound, to play next to an alarm's evidence (calibration/normal_clips.py)
            "normal_clips": [
                f"/normal/{m}/{p.name}" for p in sorted(normal_dir(self.state_dir, m).glob("normal-*.wav"))
            ],
            # the overview's sparkline: the last day's hourly median scores
            "day": [[h.hour, rounded(h.score_median)] for h in self.trends.history(m, time.time() - 86400)]
            if self.trends is not None
            else [],
        }

    def _with_readiness(self, m: str, a: dict) -> dict:
        """Evidence is written ``post_seconds`` after the start: say when the files are there."""
        ev = a.get("evidence")
        if ev:
            wav = Path(ev["wav"]).name
            a["evidence"] = {
                "wav_url": f"/evidence/{m}/{wav}",
                "png_url": f"/evidence/{m}/{Path(ev['png']).name}",
                "ready": (self.evidence_dir / m / wav).is_file(),
                **({"error": ev["error"]} if ev.get("error") else {}),
            }
        return a


def _hour_row(h) -> list:
    return [h.hour, rounded(h.score_median), rounded(h.score_p95), rounded(h.threshold), h.alarms]


def _host_port(listen: str) -> tuple[str, int]:
    """``web.listen`` (validated as ``host:port`` by the config) split; an IPv6 host without brackets."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _error(status: int, message: str) -> dict:
    bottle.response.status = status
    return {"ok": False, "error": message}
