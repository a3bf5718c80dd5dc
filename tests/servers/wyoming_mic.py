"""A Wyoming microphone server for the tests, built from the ``wyoming`` package as
wyoming-mic-external is: every client that connects gets ``audio-start`` and then the WAV's audio
as ``audio-chunk`` events in real time, looped.

    python tests/servers/wyoming_mic.py PORT WAV
"""

import asyncio
import sys
import wave

from wyoming.audio import AudioChunk, AudioStart
from wyoming.server import AsyncEventHandler, AsyncTcpServer

CHUNK_SECONDS = 0.1


class MicHandler(AsyncEventHandler):
    def __init__(self, pcm: bytes, rate: int, width: int, channels: int, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pcm, self.rate, self.width, self.channels = pcm, rate, width, channels
        self._task = asyncio.create_task(self._stream())

    async def _stream(self) -> None:
        await self.write_event(AudioStart(self.rate, self.width, self.channels).event())
        step = int(self.rate * CHUNK_SECONDS) * self.width * self.channels
        loop = asyncio.get_running_loop()
        t0, sent = loop.time(), 0
        while True:
            for i in range(0, len(self.pcm), step):
                chunk = AudioChunk(self.rate, self.width, self.channels, self.pcm[i : i + step])
                await self.write_event(chunk.event())
                sent += CHUNK_SECONDS
                await asyncio.sleep(max(0.0, t0 + sent - loop.time()))

    async def handle_event(self, event) -> bool:
        return True

    async def disconnect(self) -> None:
        self._task.cancel()


async def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    with wave.open(path, "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        pcm = w.readframes(w.getnframes())
    server = AsyncTcpServer("127.0.0.1", port)
    print(f"listening wyoming://127.0.0.1:{port}", flush=True)
    await server.run(lambda *a, **kw: MicHandler(pcm, rate, width, channels, *a, **kw))


if __name__ == "__main__":
    asyncio.run(main())
