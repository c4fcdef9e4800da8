"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file under the real name.

Everything the product writes that a user would hate to lose or find truncated
(checkpoints, adapters, states, presets, binidx output) goes through `atomic_output`:
write to a temporary file in the same folder, flush, fsync, then rename over the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.errors import RwkvTuiError

TEMP_SUFFIX = ".tmp"  # every temporary name ends so (mkstemp's and the DeepSpeed resume folder's)


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator:
    """Yield a file handle whose content appears at `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """`atomic_output` for writers that take a file name (gguf's): a temporary path next to
    `path`, fsynced and renamed over it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    _default_permissions(fd)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_output(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path, "wb") as handle:
        handle.write(data)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


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
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
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
    os.fchmod(fd, 0o666 & ~current_umask())


def current_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


def open_nofollow(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """`os.open` that refuses a symbolic link at `path` (O_NOFOLLOW): a link planted in a run
    folder must not redirect a write (a `trainer.pid` link would overwrite its target)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RwkvTuiError("is a symbolic link; run-folder files are never followed through links",
                               path=path, hint="remove the link (the trainer recreates the file)") from None
        raise


# ---------------------------------------------------------------------------- space and leftovers


@dataclass(frozen=True)
class DiskSpace:
    free_bytes: int
    mount: Path  # the filesystem's mount point, so a message can say which disk is full


def disk_space(directory: str | Path) -> DiskSpace:
    """Free bytes (for this user: statvfs's f_bavail) on the filesystem that holds, or will hold,
    `directory`: a folder not made yet is measured at its nearest existing parent."""
    existing = Path(os.path.realpath(directory))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return DiskSpace(free_bytes=shutil.disk_usage(existing).free, mount=mount_point(existing))


def mount_point(path: str | Path) -> Path:
    path = Path(os.path.realpath(path))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full_message(path: str | Path, needed_bytes: int, space: DiskSpace) -> str:
    return (f"disk full while writing {path}: {megabytes(needed_bytes)} MB needed, "
            f"{megabytes(space.free_bytes)} MB free on {space.mount}; the previous checkpoint is intact")


def megabytes(n: int) -> int:
    return -(-n // 1_000_000)  # rounded up: "0 MB needed" would read as a bug


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files (and DeepSpeed's temporary folders) a killed writer left in
    `directory`. Only safe while nothing else writes there: the run folder's owner calls it."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for leftover in sorted(directory.glob(f"*{TEMP_SUFFIX}")):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed
