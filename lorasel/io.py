"""Atomic file writes: a reader never sees a half-written file.

Everything lorasel writes that another process (or a rerun) may read goes
through these helpers: write to a temporary file in the same folder, flush and
fsync, then rename over the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lorasel.errors import OutputError, first_line


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        _chmod(fd, tmp, _file_mode(target))
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _file_mode(target: Path) -> int:
    """The permissions a written file gets: those of the file it replaces, else what ``open`` would
    give a new one (0o666 less the umask). mkstemp's own 0o600 made every checkpoint, render and
    report readable by its owner only: another user's ComfyUI, or a web server, could not read them."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without setting it: ``os.umask`` sets it, for a moment, for every
    thread (a file another thread made meanwhile would be world-writable)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return _UMASK_AT_IMPORT


def _chmod(fd: int, path: str, mode: int) -> None:
    with contextlib.suppress(OSError):  # a file system without permissions (FAT, some mounts)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # Windows: only the read-only flag
            os.chmod(path, mode)


_UMASK_AT_IMPORT = os.umask(0o022)
os.umask(_UMASK_AT_IMPORT)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def is_temporary(path: str | os.PathLike) -> bool:
    """True for the temporary files ``atomic_open`` leaves only if killed mid-write."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


@contextlib.contextmanager
def output_file(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Around writing ``what`` (e.g. "the HTML report") to ``path``: an ``OSError`` becomes one
    :class:`~lorasel.errors.OutputError` naming the file and the system's reason. Written with
    :func:`atomic_open`, a failed write leaves no file behind and an earlier one as it was."""
    target = Path(path)
    try:
        yield target
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise OutputError(
            f"cannot write {what} to {target}: {os_reason(exc, target)}",
            hint="free some space on that disk" if full else "choose a path in a folder you can write to",
        ) from exc


def os_reason(exc: OSError, path: str | os.PathLike) -> str:
    """Why writing at ``path`` failed, in words: the system's reason, except that a file where a
    folder of ``path`` should be is said as such (``mkdir`` reports it as "File exists")."""
    target = Path(path)
    blocking = next((folder for folder in target.parents if folder.is_file()), None)
    if blocking is None and isinstance(exc, FileExistsError) and target.is_file():
        blocking = target  # a folder asked for where a file is
    return f"{blocking} is a file, not a folder" if blocking else exc.strerror or first_line(exc)
