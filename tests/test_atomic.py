"""The one atomic writer: all or nothing, no temp files left, and the file modes open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from attnmt.atomic import write_atomic, write_text_atomic


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_follow_the_umask_and_existing_files_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        fresh = write_text_atomic(tmp_path / "sub" / "a.txt", "one\n")  # parents are created
        assert mode(fresh) == 0o640  # mkstemp alone would give 0600
        kept = tmp_path / "b.txt"
        kept.write_text("old")
        os.chmod(kept, 0o604)
        write_text_atomic(kept, "new")
        assert mode(kept) == 0o604 and kept.read_text() == "new"
    finally:
        os.umask(old)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_text_atomic(tmp_path / "c.txt", "good\n")

    def explode(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(path, explode)
    assert path.read_text() == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_text_is_utf8_with_newlines_untranslated(tmp_path):
    path = write_text_atomic(tmp_path / "t.txt", "¿Qué?\r\nsí\n")
    assert path.read_bytes() == "¿Qué?\r\nsí\n".encode()
