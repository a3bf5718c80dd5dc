"""Audio input devices as PortAudio (sounddevice) sees them."""
from __future__ import annotations


def list_inputs(sd=None) -> list[dict]:
    if sd is None:
        import sounddevice as sd
    try:
        default_in = sd.default.device[0]
    except Exception:  # noqa: BLE001
        default_in = None
    rows = []
    for i, d in enumerate(sd.query_devices()):
        if d["max_input_channels"] > 0:
            rows.append({"index": i, "name": d["name"], "channels": d["max_input_channels"], "rate": d["default_samplerate"],
                         "default": i == default_in})
    return rows
