"""A real RTSP server for the tests (GStreamer's gst-rtsp-server through Debian's python3-gi): serves
a WAV file's audio as L16 over RTP at ``rtsp://127.0.0.1:PORT/machine``, a fresh pipeline per
client, in real time. Run with the system Python, which has gi:

    /usr/bin/python3 tests/servers/rtsp_server.py PORT WAV
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, wav = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( filesrc location={wav} ! wavparse ! audioconvert ! audioresample ! audio/x-raw,rate=16000,channels=1 "
        "! rtpL16pay name=pay0 pt=96 )"
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory("/machine", factory)
    server.attach(None)
    print(f"listening rtsp://127.0.0.1:{port}/machine", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
