"""What every recipe config shares (they are dataclasses with sample_rate, window_seconds, n_fft, hop)."""
from __future__ import annotations

from dataclasses import asdict

from edge_agent.frontend import n_frames


class WindowedConfig:
    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """STFT frames in one window (no padding, as the front end computes them)."""
        return n_frames(self.window_samples, self.n_fft, self.hop)

    def to_dict(self) -> dict:
        return asdict(self)
