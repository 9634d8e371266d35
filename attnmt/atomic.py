"""File writes: the one home of "write beside the target, fsync, rename over it", and of appends.

Every file attnmt writes (checkpoints, configs, splits, plots, CLI outputs) goes through
:func:`write_atomic`, so a reader or a crash never sees half a file and a failed write leaves
neither a temp file nor a damaged original. The new file gets the mode a plain ``open()`` would
give it: an existing file's mode is kept, a new one follows the umask (``mkstemp`` alone would
make every file 0600). The training log is the one file that grows: :func:`append_text` adds to
it, and its readers drop a torn last line (a crash mid-append).

A temp file is locked (``flock``) while it is written. A writer killed by SIGKILL cannot remove
its temp file, but the kernel drops its lock, so the next write of the same target (and
:func:`remove_stale_temps`, which training calls on its run directory) knows the temp is stale and
removes it, while a temp some live writer holds is left alone.

Every failure to write becomes one :class:`WriteError` that names the file the user asked for
(not the temp file) and says why: "disk full while writing FILE", "FILE is a directory", ...
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

_TEMP = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # mkstemp(prefix=".NAME.", suffix=".tmp")


class WriteError(OSError):
    """A file that could not be written; ``str()`` names it and says why, in one line."""

    def __str__(self) -> str:
        return str(self.args[1] if len(self.args) > 1 else self.args[0])


def write_error(path: str | Path, e: OSError) -> WriteError:
    """The one wording of a failed write of ``path`` (what the user named, not a temp file)."""
    if isinstance(e, WriteError):
        return e
    path = Path(path)
    code = e.errno
    if code == errno.ENOSPC:
        why = f"disk full while writing {path}"
    elif code == errno.EDQUOT:
        why = f"disk quota exceeded while writing {path}"
    elif code in (errno.EACCES, errno.EPERM):
        why = f"cannot write {path}: permission denied"
    elif code == errno.EROFS:
        why = f"cannot write {path}: read-only file system"
    elif code == errno.EISDIR or path.is_dir():
        why = f"cannot write {path}: it is a directory"
    elif code in (errno.ENOTDIR, errno.EEXIST) and (above := _file_above(path.parent)):
        why = f"cannot write {path}: {above} is a file, not a directory"
    else:
        why = f"cannot write {path}: {e.strerror or e}"
    return WriteError(code, why)


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) that is not a directory."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p``, with a :class:`WriteError` naming the file in the way."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = _file_above(path)
        if blocker is None:
            raise write_error(path, e) from None
        raise WriteError(e.errno, f"cannot create directory {path}: {blocker} is a file") from None
    return path


def _umask() -> int:
    # Reading the umask means setting it; /proc avoids that race on Linux.
    try:
        for line in Path("/proc/self/status").read_text().split("\n"):
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _open(path: Path, mode: str) -> BinaryIO:
    """Every byte attnmt writes goes through a file opened here (the fault-injection tests'
    seam: they wrap it to run out of space or die half-way)."""
    return open(path, mode)  # noqa: SIM115 -- the callers close it


class _Sink:
    """The temp file as the serializer sees it; remembers the OS error of a failed write, since
    some serializers (torch.save) turn it into an error that no longer says "disk full"."""

    def __init__(self, f: BinaryIO):
        self.file, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _locked(path: Path) -> bool:
    """Whether a live writer holds ``path``'s lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True  # gone, or not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here


def remove_stale_temps(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temp files that killed writers left in ``directory`` (those of target ``name``
    only, when given); returns what was removed."""
    directory = Path(directory)
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    prefix = f".{name}." if name is not None else "."
    stale = [
        p
        for p in entries
        if p.name.startswith(prefix) and _TEMP.fullmatch(p.name) and p.is_file()
        and not _locked(p)
    ]  # fmt: skip
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def prepare_target(path: str | Path) -> Path:
    """Refuse a target that is a directory (or lies under a file), and create missing parents:
    the checks a write makes first, for a caller that wants them before the work that makes the
    content (``attnmt translate -o``)."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(errno.EISDIR, f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    return path


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    On any failure the old file is untouched and the temp file is gone; an OS error (disk full,
    a directory in the way, no permission) is raised as a :class:`WriteError` naming ``path``.
    """
    path = prepare_target(path)
    remove_stale_temps(path.parent, path.name)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    tmp, sink = Path(name), None
    try:
        with _open(tmp, "wb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # marks the temp as live (see the docstring)
            sink = _Sink(f)
            write(sink)  # type: ignore[arg-type]  # a file in every way the writers use
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, _target_mode(path))
            os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = sink.error if sink is not None and sink.error is not None else e
        if isinstance(cause, OSError):
            raise write_error(path, cause) from e
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text with ``\\n`` line ends, written atomically."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda f: f.write(data))


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` (UTF-8) and flush. Not atomic: a crash can tear the last line, so readers
    of an appended file drop a torn last line; a failure is a :class:`WriteError`."""
    path = Path(path)
    try:
        with _open(path, "ab") as f:
            f.write(text.encode("utf-8"))
            f.flush()
    except OSError as e:
        raise write_error(path, e) from None
