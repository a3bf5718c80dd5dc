"""The enrolled normal clips kept for A/B listening: a few, short, spread over the enrolment, at
the model's rate, and replaced by the next calibration."""

from __future__ import annotations

import numpy as np

from calibration.normal_clips import CLIP_SECONDS, MAX_CLIPS, keep_normal_clips
from edge_agent.audio.wavio import read_wav
from edge_agent.state.paths import normal_dir
from tests.conftest import DEMO


def test_clips_from_files_and_from_a_recording(tmp_path):
    files = sorted((DEMO / "enrol").glob("*.wav"))
    kept = keep_normal_clips(tmp_path, "fan01", 16000, files)
    assert [p.name for p in kept] == [f"normal-{i}.wav" for i in range(1, MAX_CLIPS + 1)]
    for p in kept:
        x, sr = read_wav(p)
        assert sr == 16000 and x.shape[1] == 1 and len(x) <= CLIP_SECONDS * sr
    first, _ = read_wav(kept[0])
    source, _ = read_wav(files[0])  # the first of the enrolment, as it was (16 kHz mono already)
    assert np.abs(first[:, 0] - source[: len(first), 0]).max() < 1e-3
    rec = np.sin(np.arange(45 * 16000) * 0.01).astype(np.float32) * 0.1
    kept = keep_normal_clips(tmp_path, "fan01", 16000, recording=rec)
    assert len(kept) == 3 and sorted(normal_dir(tmp_path, "fan01").iterdir()) == kept  # the old ones replaced
    short = keep_normal_clips(tmp_path, "fan01", 16000, recording=rec[: 4 * 16000])
    assert len(short) == 1 and len(read_wav(short[0])[0]) == 4 * 16000
