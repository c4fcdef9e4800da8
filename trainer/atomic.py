"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file under the real name.

Everything the product writes that a user would hate to lose or find truncated
(checkpoints, adapters, states, presets, binidx output) goes through `atomic_output`:
write to a temporary file in the same folder, flush, fsync, then rename over the target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator:
    """Yield a file handle whose content appears at `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    _default_permissions(fd)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        fsync_directory(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_output(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path, "wb") as handle:
        handle.write(data)


def fsync_directory(directory: Path) -> None:
    """Make a rename durable. Some filesystems refuse fsync on folders; the rename stays atomic."""
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


@contextlib.contextmanager
def atomic_outputs(paths: list[str | Path], mode: str = "wb") -> Iterator[list]:
    """Several files that must appear together (a .bin and its .idx): all are written to
    temporary files and renamed only once every one of them is complete."""
    paths = [Path(p) for p in paths]
    handles, temps = [], []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(tmp)
            _default_permissions(fd)
            handles.append(os.fdopen(fd, mode))
        yield handles
        for handle in handles:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
        for directory in {p.parent for p in paths}:
            fsync_directory(directory)
    except BaseException:
        for handle in handles:
            handle.close()
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


def _default_permissions(fd: int) -> None:
    """mkstemp creates 0600 files; outputs get the usual 0666 minus the umask, like open() gives."""
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
