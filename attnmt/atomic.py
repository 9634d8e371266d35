"""Atomic file writes: the one home of "write beside the target, fsync, rename over it".

Every file attnmt writes (checkpoints, configs, splits, logs, plots, CLI outputs) goes through
:func:`write_atomic`, so a reader or a crash never sees half a file and a failed write leaves
neither a temp file nor a damaged original. The new file gets the mode a plain ``open()`` would
give it: an existing file's mode is kept, a new one follows the umask (``mkstemp`` alone would
make every file 0600).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    # Reading the umask means setting it; /proc avoids that race on Linux.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
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


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text with ``\\n`` line ends, written atomically."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda f: f.write(data))
