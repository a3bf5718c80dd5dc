"""Many network audio streams from one light process, for benchmarks/network.py: the same WAV in
real time to every client, as Wyoming ``audio-chunk`` events, as raw 16-bit PCM over TCP, or as an
MP3 stream over HTTP (encoded once by ffmpeg, then sent at the file's bit rate). One asyncio loop
serves them all, so the measured agent's cost is not drowned in the servers'.

    python benchmarks/netserve.py KIND PORT WAV        # KIND: wyoming, tcp or http
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import wave

CHUNK_SECONDS = 0.1


def _wyoming_event(kind: str, data: dict, payload: bytes = b"") -> bytes:
    head = {"type": kind, "data": data, "version": "1.5.0"}
    if payload:
        head["payload_length"] = len(payload)
    return json.dumps(head).encode() + b"\n" + payload


async def _paced(writer, pieces, seconds_each: float) -> None:
    loop = asyncio.get_running_loop()
    t0, sent = loop.time(), 0.0
    try:
        while True:
            for p in pieces:
                writer.write(p)
                await writer.drain()
                sent += seconds_each
                await asyncio.sleep(max(0.0, t0 + sent - loop.time()))
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main() -> None:
    kind, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with wave.open(path, "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        pcm = w.readframes(w.getnframes())
    step = int(rate * CHUNK_SECONDS) * width * channels
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    if kind == "wyoming":
        fmt = {"rate": rate, "width": width, "channels": channels}
        pieces = [_wyoming_event("audio-chunk", fmt, c) for c in chunks]
        head = _wyoming_event("audio-start", fmt)
    elif kind == "tcp":
        pieces, head = chunks, b""
    else:
        mp3 = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", path, "-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", "-"],
            capture_output=True,
            check=True,
        ).stdout
        step = int(128_000 / 8 * CHUNK_SECONDS)
        pieces = [mp3[i : i + step] for i in range(0, len(mp3), step)]
        head = b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\n\r\n"

    async def client(reader, writer):
        if kind == "http":
            await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await _paced(writer, pieces, CHUNK_SECONDS)

    server = await asyncio.start_server(client, "127.0.0.1", port, backlog=256)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
