"""The one atomic writer: all or nothing, no temp files left, the file modes open() gives, and
one clear error naming the file for every way a write can fail."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import subprocess
import sys

import pytest

from attnmt.atomic import (
    WriteError,
    append_text,
    make_dirs,
    remove_stale_temps,
    write_atomic,
    write_text_atomic,
)


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
        append_text(tmp_path / "log", "x\n")
        assert mode(tmp_path / "log") == 0o640
    finally:
        os.umask(old)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_text_atomic(tmp_path / "c.txt", "good\n")

    def explode(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match=f"^disk full while writing {path}$"):
        write_atomic(path, explode)
    assert path.read_text() == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]

    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # not an OS error: passed on as it is
        write_atomic(path, interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


class Faulty:
    """A file opened for writing that writes ``keep`` bytes, then fails: a full disk (raises
    ENOSPC) or a SIGKILL (the process dies there, the bytes so far on disk)."""

    def __init__(self, f, keep: int, fault: str):
        self.f, self.keep, self.fault = f, keep, fault

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) <= self.keep:
            self.keep -= len(data)
            return self.f.write(data)
        self.f.write(data[: self.keep])
        self.f.flush()
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def full_disk(monkeypatch):
    import attnmt.atomic as atomic

    real = atomic._open
    monkeypatch.setattr(atomic, "_open", lambda path, mode: Faulty(real(path, mode), 0, "enospc"))


def test_disk_full_is_named_even_when_the_serializer_hides_it(tmp_path, full_disk):
    def torch_like(f):
        try:
            f.write(b"x" * 10)
        except OSError:
            raise RuntimeError("unexpected pos 704 vs 598") from None  # what torch.save says

    with pytest.raises(WriteError, match=f"^disk full while writing {tmp_path}/m.pt$"):
        write_atomic(tmp_path / "m.pt", torch_like)
    assert list(tmp_path.iterdir()) == []


def test_append_reports_a_full_disk_by_name(tmp_path, full_disk):
    with pytest.raises(WriteError, match=f"^disk full while writing {tmp_path}/log$"):
        append_text(tmp_path / "log", "line\n")


@pytest.mark.parametrize(
    "target, message",
    [
        ("out", "cannot write {d}/out: it is a directory"),
        ("f/x", "cannot write {d}/f/x: {d}/f is a file, not a directory"),
        ("f/x/y", "cannot write {d}/f/x/y: {d}/f is a file, not a directory"),
    ],
)
def test_a_path_in_the_way_is_one_clear_error(tmp_path, target, message):
    (tmp_path / "out").mkdir()
    (tmp_path / "f").write_text("")
    with pytest.raises(WriteError) as e:
        write_text_atomic(tmp_path / target, "x")
    assert str(e.value) == message.format(d=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "out"]


def test_make_dirs_names_the_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("")
    for target in ("f", "f/run"):
        with pytest.raises(WriteError) as e:
            make_dirs(tmp_path / target)
        where = tmp_path / target
        assert str(e.value) == f"cannot create directory {where}: {tmp_path}/f is a file"
    assert make_dirs(tmp_path / "a" / "b").is_dir()


def test_stale_temps_of_killed_writers_go_and_live_ones_stay(tmp_path):
    target = write_text_atomic(tmp_path / "last.pt", "v1")
    stale = tmp_path / ".last.pt.abcd1234.tmp"  # a writer killed by SIGKILL left it
    stale.write_bytes(b"half")
    other = tmp_path / ".test.tsv.wxyz5678.tmp"
    other.write_bytes(b"half")
    live = tmp_path / ".last.pt.live0000.tmp"
    live.write_bytes(b"half")
    # A live writer in another process holds its temp file's lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys; f=open(sys.argv[1]); "
         "fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); sys.stdin.read()", str(live)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "1"
        write_text_atomic(target, "v2")  # cleans its own target's stale temps only
        assert not stale.exists() and other.exists() and live.exists()
        assert remove_stale_temps(tmp_path) == [other]
        assert live.exists() and target.read_text() == "v2"
    finally:
        holder.stdin.close()
        holder.wait()
    assert remove_stale_temps(tmp_path) == [live]  # its writer is gone now
    with open(tmp_path / "keep.tmp", "w") as f:  # not an attnmt temp name: never touched
        fcntl.flock(f, fcntl.LOCK_EX)
    assert remove_stale_temps(tmp_path) == [] and (tmp_path / "keep.tmp").exists()


def test_text_is_utf8_with_newlines_untranslated(tmp_path):
    path = write_text_atomic(tmp_path / "t.txt", "¿Qué?\r\nsí\n")
    assert path.read_bytes() == "¿Qué?\r\nsí\n".encode()
