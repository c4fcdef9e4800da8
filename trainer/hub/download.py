"""Download a checkpoint from Hugging Face (or ModelScope), then prove it is one.

The order is the contract: free space is checked before the first byte, the SHA256 (when
the publisher gives one) after the last, then `inspect_checkpoint` reads the weights. Only a
file that passed all three is returned, so only such a file is ever offered or remembered.
Hugging Face downloads go through `huggingface_hub`, which honours HF_ENDPOINT (mirrors),
HF_HOME (cache) and resumes a partial file; every failure becomes an error saying what to do.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rwkv_tui.trainer.atomic import disk_space
from rwkv_tui.trainer.errors import RwkvTuiError

if TYPE_CHECKING:
    from rwkv_tui.trainer.hub.catalog import CatalogEntry
    from rwkv_tui.trainer.spec import ModelSpec

SOURCES = ("hf", "modelscope")
SPACE_MARGIN_BYTES = 64 * 1024**2  # metadata and the filesystem's own slack
MIRROR_HINT = "set HF_ENDPOINT to a mirror (e.g. HF_ENDPOINT=https://hf-mirror.com) if huggingface.co is blocked"

ProgressCallback = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None)


class DownloadError(RwkvTuiError):
    """A model download that failed; the message says what to do."""


@dataclass(frozen=True)
class HubFile:
    """One file on a hub: where it is and what it should be."""

    repo: str
    file: str
    source: str = "hf"
    sha256: str = ""
    size: int | None = None
    revision: str = "main"

    @classmethod
    def from_entry(cls, entry: CatalogEntry, source: str = "hf") -> HubFile:
        repo = entry.hf_repo if source == "hf" else entry.modelscope_repo
        if not repo:
            other = "modelscope" if source == "hf" else "hf"
            raise DownloadError(f"the catalogue knows no {_source_name(source)} location for {entry.name}",
                                hint=f"try --source {other}")
        revision = "main" if source == "hf" else "master"
        return cls(repo, entry.file, source, entry.sha256, entry.file_size, revision)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    spec: ModelSpec


def download_model(hub_file: HubFile, dest_dir: str | Path | None = None,
                   on_progress: ProgressCallback | None = None) -> Downloaded:
    """Fetch `hub_file` (into `dest_dir`, else the hub's cache), verify it, read its architecture."""
    if hub_file.source not in SOURCES:
        raise DownloadError(f"unknown source {hub_file.source!r}", hint=f"use one of: {', '.join(SOURCES)}")
    report = on_progress or (lambda done, total: None)
    fetch = _fetch_from_hf if hub_file.source == "hf" else _fetch_from_modelscope
    path = fetch(hub_file, Path(dest_dir) if dest_dir else None, report)
    verify_sha256(path, hub_file.sha256)
    return Downloaded(path, _inspect_downloaded(path))


# ---------------------------------------------------------------------------- checks


def check_free_space(folder: Path, needed_bytes: int | None) -> None:
    """Refuse to start a download the disk cannot hold."""
    if not needed_bytes:
        return
    space = disk_space(folder)
    if space.free_bytes < needed_bytes + SPACE_MARGIN_BYTES:
        raise DownloadError(
            f"not enough disk space: the download needs {_gb(needed_bytes)} GB, "
            f"{_gb(space.free_bytes)} GB free on {space.mount}", path=folder,
            hint="free some space, or download to another disk with --dir (or point HF_HOME there)")


def verify_sha256(path: Path, expected: str) -> None:
    """Compare the file with the publisher's SHA256; a mismatch removes the file."""
    if not expected:
        return
    digest = file_sha256(path)
    if digest != expected.lower():
        _remove_download(path)
        raise DownloadError(
            f"checksum mismatch: SHA256 {digest} but the publisher's is {expected}; the file was removed",
            path=path, hint="run the same command again; if it fails again, the server (HF_ENDPOINT) "
                            "serves a different file than the publisher's")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 1024**2), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_download(path: Path) -> None:
    """Remove the file and, for the hub cache's symlink, the blob it points to."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)


def _inspect_downloaded(path: Path) -> ModelSpec:
    from rwkv_tui.trainer.checkpoint import inspect_checkpoint

    try:
        return inspect_checkpoint(path)
    except RwkvTuiError as exc:
        raise DownloadError(f"downloaded, but it is not a checkpoint rwkv-tui can train: {exc.message}",
                            path=path, hint="pick an RWKV .pth checkpoint (x070, x060 or x052); "
                                            "the file was kept in case you want it") from None


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def _source_name(source: str) -> str:
    return {"hf": "Hugging Face", "modelscope": "ModelScope"}.get(source, source)


# ---------------------------------------------------------------------------- Hugging Face


def hf_endpoint() -> str:
    """Read at call time, so HF_ENDPOINT set after huggingface_hub was imported still counts."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(constants.HF_HUB_CACHE)


def _fetch_from_hf(hub_file: HubFile, dest_dir: Path | None, report: ProgressCallback) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = hf_endpoint()
    with _hub_errors(hub_file, endpoint):
        url = hf_hub_url(hub_file.repo, hub_file.file, revision=hub_file.revision, endpoint=endpoint)
        size = get_hf_file_metadata(url).size or hub_file.size
        target = dest_dir if dest_dir is not None else hf_cache_dir()
        check_free_space(target, size)
        path = hf_hub_download(hub_file.repo, hub_file.file, revision=hub_file.revision, endpoint=endpoint,
                               local_dir=dest_dir, cache_dir=None if dest_dir else hf_cache_dir(),
                               tqdm_class=_progress_class(report))
    return Path(path)


def _progress_class(report: ProgressCallback):
    """A tqdm class for huggingface_hub that draws nothing and hands each update to `report`."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class ProgressReporter(hub_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # the caller draws its own bar (rich or Textual)
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)
            self.expected = kwargs.get("total")
            report(self.done, self.expected)

        def update(self, n=1):
            self.done += int(n or 0)
            report(self.done, self.expected)

    return ProgressReporter


@contextmanager
def _hub_errors(hub_file: HubFile, endpoint: str) -> Iterator[None]:
    """huggingface_hub's and httpx's exceptions, as messages that say what to do."""
    from huggingface_hub import errors

    httpx = _http_client_module()
    where = f"{hub_file.repo}/{hub_file.file} on {endpoint}"
    try:
        yield
    except errors.GatedRepoError:
        raise DownloadError(f"{where} is gated: accept its terms on the model page first",
                            hint="then log in with `hf auth login` (or set HF_TOKEN) and run the same command again"
                            ) from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.EntryNotFoundError,
            errors.RemoteEntryNotFoundError):
        raise DownloadError(f"not found (404): {where}",
                            hint="check the repository and file name on the model page; "
                                 "`rwkv-tui models list` shows the catalogue's names") from None
    except errors.LocalEntryNotFoundError:
        raise _no_network(where) from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise DownloadError(f"the hub answered HTTP {status} for {where}",
                            hint=f"try again later, or {MIRROR_HINT}") from None
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise _no_network(where) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout):
        raise DownloadError(f"the download of {where} was interrupted",
                            hint="run the same command again (within a run, dropped connections are "
                                 "resumed with range requests; the file only appears once complete)") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while downloading {where}",
                                hint="free some space and run the same command again (it resumes), "
                                     "or download to another disk with --dir") from None
        raise


def _http_client_module():
    """The HTTP client huggingface_hub is built on: httpx2 in recent releases, httpx before."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


def _no_network(where: str) -> DownloadError:
    return DownloadError(f"no network: could not reach {where}",
                         hint=f"check the connection (a proxy needs HTTPS_PROXY), or {MIRROR_HINT}")


# ---------------------------------------------------------------------------- ModelScope


def _fetch_from_modelscope(hub_file: HubFile, dest_dir: Path | None, report: ProgressCallback) -> Path:
    try:
        from modelscope.hub.file_download import model_file_download
    except ImportError:
        raise DownloadError("ModelScope downloads need the modelscope package: pip install modelscope") from None
    if dest_dir is not None:
        check_free_space(dest_dir, hub_file.size)
    try:
        path = Path(model_file_download(model_id=hub_file.repo, file_path=hub_file.file,
                                        revision=hub_file.revision,
                                        local_dir=str(dest_dir) if dest_dir else None))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError("disk full while downloading from ModelScope",
                                hint="free some space or use --dir on another disk") from None
        raise DownloadError(f"ModelScope download of {hub_file.repo}/{hub_file.file} failed: {exc}",
                            hint="check the connection and run the same command again") from None
    report(path.stat().st_size, path.stat().st_size)
    return path
