"""Files that are never seen half-written: checkpoints and ``results.json``.

A file written elsewhere (the system temporary directory) and moved into place is copied when
the two are on different filesystems, the usual layout on clusters: a reader, a crash or a full
disk then meets half a file at its final path. :func:`write_atomic` writes the bytes to a
temporary file in the target's own directory (``.<name>.tmp-<pid>``), flushes it to the disk
(``fsync``), renames it over the target (``os.replace``, atomic within one filesystem) and syncs
the directory, so that ``path`` holds either the previous file or the new one, whole.

If anything fails on the way (a full disk, a quota, a read-only directory) the temporary file
is removed, the previous file is left as it was, and :class:`WriteFailed` names the file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on device; disk quota exceeded


class WriteFailed(OSError):
    """A file could not be written; the previous one at ``path`` (if any) is intact.

    ``str()`` is one line, e.g. ``no space left on device while writing runs/last.ckpt``.
    """

    def __init__(self, path: str | os.PathLike, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = Path(path)
        self.cause = cause

    @property
    def disk_full(self) -> bool:
        return self.errno in DISK_FULL

    def __str__(self) -> str:
        return f"{reason(self.cause)} while writing {self.path}"

    def __reduce__(self):  # OSError's would call __init__ with (errno, strerror, filename)
        return type(self), (self.path, self.cause)


def reason(err: OSError) -> str:
    """What went wrong, without the path: ``no space left on device``."""
    text = os.strerror(err.errno) if err.errno is not None else str(err)
    return text[:1].lower() + text[1:]


def temporary_path(path: str | os.PathLike) -> Path:
    """Where :func:`write_atomic` writes ``path`` first: hidden, next to it, one per process."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file in its directory; see the module's text.

    The new file has the mode of any new file under the umask. Raises :class:`WriteFailed`.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb", buffering=0) as file:  # unbuffered: nothing is left to flush when it closes
            _write_all(file, data)
            os.fsync(file.fileno())  # some filesystems (NFS) report a full disk only here or at close
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteFailed):
            raise WriteFailed(path, err) from None
        raise
    _fsync_directory(path.parent)


def _write_all(file, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` to the unbuffered ``file`` (a write may take only part)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[file.write(view):]


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass  # never created, or already gone


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable. Best effort: some systems cannot open or sync a directory,
    and the file is complete at its path either way."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
