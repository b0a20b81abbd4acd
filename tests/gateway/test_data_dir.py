"""The one atomic write: a reader sees the old file or the new one, a secret is its owner's
only even over a crash's leftover, and a writer that fails leaves the old file as it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.data_dir import write_atomically


@pytest.mark.parametrize(("private", "mode"), [(True, 0o600), (False, 0o666 & ~0o022)])
def test_the_file_has_the_new_content_and_its_mode(tmp_path: Path, private: bool,
                                                   mode: int) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")
    stale = tmp_path / "f.json.tmp"
    stale.write_text("half of a crashed write")
    stale.chmod(0o644)  # a leftover must not lend its mode to a secret
    old_umask = os.umask(0o022)
    try:
        write_atomically(path, b"new", durable=True, private=private)
    finally:
        os.umask(old_umask)
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert not stale.exists()


def test_a_writer_that_fails_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    path.write_bytes(b"old")

    def fails(f: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(path, fails, durable=True)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]
