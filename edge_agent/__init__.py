"""edge-agent: always-on anomalous sound detection for industrial machines.

The runtime package. It never imports torch, so it fits a small device.
"""

__version__ = "0.1.0"
