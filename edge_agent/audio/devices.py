"""Audio input devices as PortAudio (sounddevice) sees them."""

from __future__ import annotations

from edge_agent.errors import UserError

PORTAUDIO_HINT = (
    "install it with 'sudo apt-get install libportaudio2' (Debian, Ubuntu, Jetson L4T) or your distribution's "
    "portaudio package; replaying WAV files (machines.<id>.input.file) works without it"
)


class PortAudioMissing(UserError):
    """Live capture needs the PortAudio system library."""


def import_sounddevice():
    """sounddevice, or a clear message when the PortAudio library it loads is not installed."""
    try:
        import sounddevice
    except OSError as e:  # sounddevice raises OSError('PortAudio library not found') at import
        raise PortAudioMissing(
            f"live audio needs the PortAudio library, which was not found ({e}); {PORTAUDIO_HINT}"
        ) from None
    return sounddevice


def list_inputs(sd=None) -> list[dict]:
    if sd is None:
        sd = import_sounddevice()
    try:
        default_in = sd.default.device[0]
    except Exception:  # noqa: BLE001
        default_in = None
    rows = []
    for i, d in enumerate(sd.query_devices()):
        if d["max_input_channels"] > 0:
            rows.append(
                {
                    "index": i,
                    "name": d["name"],
                    "channels": d["max_input_channels"],
                    "rate": d["default_samplerate"],
                    "default": i == default_in,
                }
            )
    return rows
