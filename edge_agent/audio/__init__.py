"""Audio input: sources that fill a ring buffer (live capture, WAV replay, network streams),
conversion to the model's rate and channel, windows, WAV files and devices. Knows nothing of
models or alarms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.audio.source import AudioDeviceError, AudioSource
from edge_agent.audio.windows import Windower, frame_windows

if TYPE_CHECKING:
    from edge_agent.config import MachineConfig

__all__ = ["AudioDeviceError", "AudioSource", "Windower", "frame_windows", "open_source"]


def open_source(machine: str, mc: "MachineConfig", model_rate: int) -> AudioSource:
    """The source a machine's ``input`` section asks for: a WAV replay, a network stream, or live
    capture (asking the device for the model's rate unless ``sample_rate`` is set)."""
    inp = mc.input
    if inp.url is not None:
        from edge_agent.audio.network_sources import open_network_source

        return open_network_source(machine, inp, model_rate)
    if inp.file is not None:
        from edge_agent.audio.replay import ReplaySource
        from edge_agent.audio.wavio import AudioFileError

        src = ReplaySource(machine, inp.file, realtime=inp.realtime, loop=inp.loop, continuous=inp.continuous)
        if isinstance(inp.channel, int) and inp.channel >= src.channels:
            raise AudioFileError(
                f"machines.{machine}.input.channel is {inp.channel}, but {src.path} has {src.channels} channel(s): "
                f"use 0-{src.channels - 1} or 'mix'"
            )
        return src
    from edge_agent.audio.capture import CaptureSource  # imports sounddevice (PortAudio) only for live input

    return CaptureSource(machine, inp.device, inp.sample_rate or model_rate, inp.channel)
