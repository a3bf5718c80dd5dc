"""Fuzz tests of every parser of untrusted input: operator commands, the config loader (network
input URLs included), the WAV reader, the learning request and a Wyoming server's events, plus the
JSON the agent writes. Each input gets a result or the
parser's own error (exit 2 at the CLI), never another exception.

Hypothesis runs derandomized (a fixed seed derived from each test), with a bounded number of
examples, so CI is repeatable; a failure prints the example to reproduce it.
"""

from __future__ import annotations

import io
import json
import math
import wave

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_agent import strict_json
from edge_agent.audio.wavio import AudioFileError, pcm16_blocks, read_wav, wav_info
from edge_agent.config import Config, ConfigError, load_config, parse_config
from edge_agent.runtime.commands import COMMANDS, CommandError, parse_command, request_id_of
from edge_agent.runtime.learn_request import read_request

FUZZ = settings(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["#", "+", "a/#", "", "x" * 300, "24h", "3s", "mix", "0.0.0.0:99999", ".inf"]),
)
KEYS = st.sampled_from(["command", "minutes", "hours", "scale", "id", "note", "alarm_id", "seconds", "done"])
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(KEYS | st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(FUZZ, max_examples=400)
@given(st.one_of(st.binary(max_size=5000), documents.map(lambda d: json.dumps(d).encode())))
def test_commands_parse_or_say_why(raw):
    try:
        cmd = parse_command(raw)
    except CommandError as e:
        assert str(e)
    else:
        assert cmd.command in COMMANDS
        for v in cmd.model_dump().values():
            assert not isinstance(v, float) or math.isfinite(v)
    rid = request_id_of(raw)
    assert rid is None or (isinstance(rid, str) and len(rid) <= 100)


@settings(FUZZ, max_examples=60)
@given(st.integers(min_value=17, max_value=200_000), st.sampled_from("[{"))
def test_commands_nested_to_any_depth_are_refused(depth, bracket):
    close = "]" if bracket == "[" else "}"
    inner = '"a":' if bracket == "{" else ""
    raw = ((bracket + inner) * depth)[: -len(inner) or None] + close * depth
    try:
        parse_command(raw.encode())
    except CommandError as e:
        assert "nested deeper" in str(e) or "bytes; at most" in str(e) or "not valid JSON" in str(e)
    assert request_id_of(raw) is None


# The config: a valid document with values swapped at its real keys, and random documents.
_BASE = {
    "node_id": "n1",
    "machines": {
        "fan01": {
            "input": {"file": "/nonexistent.wav", "realtime": False, "channel": "mix", "silence_seconds": 10},
            "hop_seconds": 1.0,
            "alarm": {"raise_after": 3, "of_last": 5, "clear_after": 5, "smooth_seconds": 4, "update_seconds": 30},
            "learn": "24h",
            "off_margin_db": 20,
            "k": 1,
        },
        "pcm01": {  # a network input: its URL, raw format and back-off are fuzzed too
            "input": {
                "url": "tcp://10.0.0.7:5000",
                "raw": {"format": "s16le", "rate": 16000, "channels": 1},
                "reconnect_max_seconds": 30,
            }
        },
    },
    "mqtt": {
        "host": "localhost",
        "port": 1883,
        "keepalive": 30,
        "topic_prefix": "edge-agent",
        "score_interval_seconds": 10,
        "homeassistant": {"discovery_prefix": "homeassistant", "shelve_minutes": 60},
    },
    "metrics": {"listen": "127.0.0.1:9108"},
    "web": {"listen": "127.0.0.1:8080"},
    "evidence": {"max_mb": 200, "pre_seconds": 10},
    "outbox": {"max_rows": 1000, "max_age_days": 7},
    "status_interval_seconds": 30,
}


def _paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


PATHS = list(_paths(_BASE))


def _with(doc, path, value):
    """``doc`` with ``value`` at ``path``; unchanged when an earlier change left no mapping there."""
    doc = json.loads(json.dumps(doc))
    node = doc
    for k in path[:-1]:
        node = node.get(k) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node[path[-1]] = value
    return doc


URL_PARTS = st.sampled_from(
    ["rtsp://", "rtsps://", "http://", "https://", "tcp://", "wyoming://", "ftp://", "", "user:pw@", "u@", "[::1]",
     "cam1", "10.0.0.7", ":554", ":0", ":99999", ":x", "/stream1", "?a=b", "#f", " ", "\n", "%00", "\x00", "é"]
)  # fmt: skip


@settings(FUZZ, max_examples=400)
@given(st.one_of(st.lists(URL_PARTS, max_size=6).map("".join), st.text(max_size=80)))
def test_input_urls_are_accepted_or_refused_with_a_reason(url):
    from urllib.parse import urlsplit

    from edge_agent.audio.urls import redacted, with_credentials
    from edge_agent.config_input import URL_SCHEMES, check_url

    try:
        check_url(url)
    except ValueError as e:
        assert str(e)
        return
    u = urlsplit(url)
    assert u.scheme in URL_SCHEMES and u.hostname and u.password is None
    full = with_credentials(url, "viewer", "s3cret:/@pw")
    assert urlsplit(full).password is not None and "s3cret" not in redacted(full)


@settings(FUZZ, max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=3000),
        st.lists(  # headers with a payload, some announcing more than comes (a server that hangs up)
            st.tuples(documents, st.binary(max_size=64), st.integers(0, 3)).map(
                lambda d: (
                    json.dumps(
                        d[0] if not isinstance(d[0], dict) else {**d[0], "payload_length": len(d[1]) + d[2]}
                    ).encode()
                    + b"\n"
                    + d[1]
                )
            ),
            max_size=4,
        ).map(b"".join),
    )
)
@example(b'{"type": "audio-chunk", "payload_length": 10}\nabc')
@example(b'{"type": "audio-start", "data_length": 8}\n{"ra')
def test_wyoming_events_are_read_or_refused(raw):
    """Whatever a server sends: events, the end of the stream, or InputError; never another
    exception, and never more than the bounds allow."""
    import asyncio

    from edge_agent.audio.network import InputError
    from edge_agent.audio.wyoming_source import MAX_HEADER, read_event

    async def read_all():
        reader = asyncio.StreamReader(limit=MAX_HEADER)
        reader.feed_data(raw)
        reader.feed_eof()
        events = []
        while (ev := await read_event(reader)) is not None:
            events.append(ev)
        return events

    try:
        events = asyncio.run(read_all())
    except InputError as e:
        assert str(e)
        return
    for ev in events:
        assert isinstance(ev.type, str) and isinstance(ev.data, dict)


@settings(FUZZ, max_examples=400)
@given(st.lists(st.tuples(st.sampled_from(PATHS), documents), min_size=1, max_size=3))
def test_config_values_validate_or_name_the_key(changes):
    doc = _BASE
    for path, value in changes:
        doc = _with(doc, path, value)
    try:
        cfg = parse_config(doc)
    except ConfigError as e:
        assert str(e).startswith("invalid config")
        return
    assert isinstance(cfg, Config)
    for path in PATHS:  # every number that was accepted is finite
        node = cfg
        for k in path:
            node = node.get(k) if isinstance(node, dict) else getattr(node, k, None)
        assert not isinstance(node, float) or math.isfinite(node)


@settings(FUZZ, max_examples=150)
@given(st.one_of(st.binary(max_size=3000), documents.map(lambda d: json.dumps(d).encode())))
def test_config_files_of_any_bytes_load_or_are_refused(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as e:
        assert str(e)


def _wav_bytes(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((1600, 2))).astype(np.float32)
    buf = io.BytesIO()
    if kind == "pcm16":
        with wave.open(buf, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((x * 32767).astype("<i2").tobytes())
    else:
        from scipy.io import wavfile

        wavfile.write(buf, 16000, x)
    return buf.getvalue()


WAVS = {k: _wav_bytes(k) for k in ("pcm16", "float32")}


@settings(FUZZ, max_examples=300)
@given(
    st.sampled_from(sorted(WAVS)),
    st.lists(st.tuples(st.integers(0, 79), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.integers(0, 7000)),
)
def test_wav_files_read_finite_audio_or_say_why(tmp_path_factory, kind, flips, cut):
    raw = bytearray(WAVS[kind])
    for pos, byte in flips:  # the header (RIFF, fmt and data chunks) with bytes changed
        raw[pos] = byte
    if cut is not None:
        raw = raw[:cut]
    path = tmp_path_factory.mktemp("wav") / "x.wav"
    path.write_bytes(bytes(raw))
    try:
        x, sr = read_wav(path)
    except AudioFileError as e:
        assert str(path) in str(e)
    else:
        assert x.dtype == np.float32 and x.ndim == 2 and 0 < x.shape[1] <= 64 and 0 < sr <= 768_000
        assert np.isfinite(x).all()
    try:
        info = wav_info(path)
    except AudioFileError:
        return
    assert 0 < info.sample_rate <= 768_000 and 0 < info.channels <= 64
    # a replay reads a 16-bit file of its format a block at a time: int16 blocks, never more than the
    # header gives, or None (read whole by read_wav above)
    blocks = pcm16_blocks(path, 1600, info.sample_rate, info.channels)
    if blocks is not None:
        got = list(blocks)
        assert all(b.dtype == np.int16 and b.shape[1] == info.channels and 0 < len(b) <= 1600 for b in got)
        assert sum(len(b) for b in got) <= info.frames


@settings(FUZZ, max_examples=150)
@given(st.one_of(st.binary(max_size=5000), documents.map(lambda d: json.dumps(d).encode())))
def test_learning_requests_are_used_or_set_aside(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("learn") / "learning.json"
    path.write_bytes(raw)
    req = read_request(path)
    if req is None:
        assert not path.exists() and path.with_name("learning.json.invalid").is_file()
    else:
        assert 60 <= req.seconds <= 90 * 86400 and math.isfinite(req.done)


@settings(FUZZ, max_examples=150)
@given(
    st.fixed_dictionaries(
        {"seconds": st.just(3600)},
        optional={"adapt": documents, "corpus": documents, "adapt_steps": documents},
    )
)
def test_learning_requests_with_adaptation_are_bounded_or_set_aside(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("learn") / "learning.json"
    path.write_text(json.dumps(doc))
    req = read_request(path)
    if req is None:
        assert path.with_name("learning.json.invalid").is_file()
        return
    assert isinstance(req.adapt, bool) and len(req.corpus) <= 8 and all(len(c) <= 1000 for c in req.corpus)
    assert req.adapt_steps is None or 1 <= req.adapt_steps <= 100_000


@settings(FUZZ, max_examples=200)
@given(documents)
def test_written_json_is_always_strict(doc):
    text = strict_json.dumps(doc)
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(c)))
