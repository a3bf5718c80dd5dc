"""``run`` (the daemon), ``devices`` and ``probe``."""

from __future__ import annotations

import signal
from pathlib import Path


def add_parsers(command) -> None:
    r = command(
        "run",
        help="run the agent (the daemon)",
        description="Listen to every configured machine until SIGTERM/SIGINT; "
        "with only non-looping WAV replays as inputs, exit 0 once every window is scored.",
    )
    r.add_argument(
        "--config",
        type=Path,
        help="config file (default /etc/edge-agent/config.yaml, then $XDG_CONFIG_HOME/edge-agent/config.yaml)",
    )
    r.add_argument(
        "--scores",
        action="store_true",
        help="also print every window's score, its threshold, level and the machine's state (one line per window)",
    )
    r.set_defaults(func=cmd_run)

    v = command(
        "devices",
        help="list audio input devices",
        description="Input devices with index, channels and default sample rate; "
        "use the index or a part of the name as machines.<id>.input.device.",
    )
    v.set_defaults(func=cmd_devices)

    p = command(
        "probe",
        help="say what a network audio URL carries",
        description="Connect to an RTSP camera, an HTTP(S) stream, a raw PCM sender (tcp://) or a Wyoming mic "
        "(wyoming://) and list its streams: codec, sample rate, channels. Use it to check an input before "
        "putting its URL in machines.<id>.input.url.",
    )
    p.add_argument("url", help="e.g. rtsp://camera1/stream1, http://host/live.mp3, wyoming://10.0.0.8:10600")
    p.add_argument("--username", help="user for rtsp(s):// and http(s):// (not in the URL)")
    p.add_argument("--password-file", type=Path, help="file holding the password (never on the command line)")
    p.add_argument(
        "--raw",
        metavar="FORMAT:RATE:CHANNELS",
        help="what a tcp:// sender sends, e.g. s16le:16000:1 (raw PCM has no header to say so)",
    )
    p.set_defaults(func=cmd_probe)


def cmd_run(a) -> int:
    from functools import partial

    from calibration.feedback import feedback_factory
    from calibration.learning import learner_factory
    from edge_agent.model.blas import single_thread_blas
    from edge_agent.runtime.heap import fix_mmap_threshold

    fix_mmap_threshold()  # before the model and the first windows are allocated
    single_thread_blas()  # its worker threads would spin after every window's k-NN

    from edge_agent.config import load_config
    from edge_agent.runtime.daemon import build_daemon

    daemon = build_daemon(
        load_config(a.config),
        config_path=a.config,
        print_scores=a.scores,
        learner_factory=partial(learner_factory, config_path=a.config),
        feedback_factory=feedback_factory,
    )
    install_signals(daemon.agent)
    return daemon.agent.run()


def install_signals(agent) -> None:
    # Plain assignments only: no lock, no logging (see Agent.signalled).
    def _stop(signum, _frame):
        agent.signalled = signal.Signals(signum).name

    def _reload(_signum, _frame):
        agent.reload_signalled = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)


def cmd_devices(a) -> int:
    from edge_agent.audio.devices import list_inputs

    rows = list_inputs()  # says what to install when PortAudio is missing
    if not rows:
        print("no audio input devices found (is PulseAudio/ALSA running and a microphone connected?)")
        return 1
    print(f"{'index':>5}  {'channels':>8}  {'rate':>7}  name")
    for r in rows:
        print(
            f"{r['index']:>5}  {r['channels']:>8}  {r['rate']:>7.0f}  "
            f"{r['name']}{'  (default)' if r['default'] else ''}"
        )
    return 0


def cmd_probe(a) -> int:
    from edge_agent.audio.probe import probe
    from edge_agent.credentials import read_secret
    from edge_agent.errors import UserError

    raw = None
    if a.raw:
        parts = a.raw.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise UserError(f"--raw {a.raw!r}: give FORMAT:RATE:CHANNELS, e.g. s16le:16000:1")
        raw = {"format": parts[0], "rate": int(parts[1]), "channels": int(parts[2])}
    password = read_secret(a.password_file, "probe_password", "--password-file") if a.password_file else None
    streams = probe(a.url, a.username, password, raw)
    audio = [s for s in streams if s["kind"] == "audio"]
    for s in streams:
        rate = f"{s['sample_rate']} Hz" if s["sample_rate"] else "-"
        print(f"{s['kind']:<6} {s['codec']:<12} {rate:>9}  {s['channels'] or '-'} channel(s)")
    if not audio:
        print("no audio track: the agent cannot listen to this URL")
        return 1
    print("the agent takes the first audio track, converted to the model's rate; input.channel picks a channel")
    return 0
