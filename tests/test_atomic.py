"""Files replaced atomically keep the permissions an ordinary write would give them."""

import os
import stat

import pytest

from edge_agent.state.atomic import atomic_dir, atomic_write, current_umask


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_a_new_file_gets_the_umasks_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    new = tmp_path / "bank.npz"
    with atomic_write(new) as f:
        f.write(b"x")
    assert _mode(new) == 0o666 & ~current_umask()  # not mkstemp's 0600
    kept = tmp_path / "state.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    with atomic_write(kept, "w") as f:
        f.write('{"a": 1}')
    assert _mode(kept) == 0o640 and kept.read_text() == '{"a": 1}'


def test_a_umask_set_after_import_is_the_one_that_counts(tmp_path):
    """A wrapper (or systemd's UMask= on a re-exec) may set the umask after the package is imported."""
    before = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        with atomic_write(tmp_path / "evidence.wav") as f:
            f.write(b"x")
        assert _mode(tmp_path / "evidence.wav") == 0o640
    finally:
        os.umask(before)
    assert current_umask() == before


@pytest.mark.skipif(current_umask() & 0o044, reason="this process's umask hides files from other users anyway")
def test_a_bundle_written_through_a_private_folder_is_readable_by_a_service_user(tmp_path):
    """export writes a bundle through atomic_dir and its manifest through atomic_write; the agent
    reads it as its own service user (docs/deploy.md)."""
    with atomic_dir(tmp_path / "bundle") as d:
        with atomic_write(d / "manifest.json", "w") as f:
            f.write("{}")
    assert _mode(tmp_path / "bundle") & 0o005 == 0o005
    assert _mode(tmp_path / "bundle" / "manifest.json") & 0o004
