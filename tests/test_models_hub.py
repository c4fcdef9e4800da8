"""`rwkv-tui models`: the shipped catalogue, and downloads through a loopback server that answers
like the Hugging Face hub (HEAD/GET on /{repo}/resolve/{revision}/{file}). No test touches the internet."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import write_tiny_checkpoint
from rwkv_tui.cli import main
from rwkv_tui.trainer.atomic import DiskSpace
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.hub import download as hub_download
from rwkv_tui.trainer.hub.catalog import find_entry, load_catalog, method_fits
from rwkv_tui.trainer.model.init import rwkv7_spec
from rwkv_tui.trainer.hub.download import DownloadError, HubFile, download_model

REPO, COMMIT = "tiny/rwkv7", "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    """What the server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)  # file name -> content
    drop_after: int = 0  # bytes sent before the connection is closed, while `drops` lasts
    drops: int = 0  # how many GETs are cut short
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _file(self) -> tuple[str, bytes] | None:
            prefix = f"/{REPO}/resolve/main/"
            name = self.path.split("?")[0][len(prefix):] if self.path.startswith(prefix) else None
            return (name, hub.files[name]) if name in hub.files else None

        def _not_found(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _headers(self, status: int, content: bytes, start: int = 0) -> None:
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
            self.send_header("Content-Length", str(len(content) - start))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.end_headers()

        def do_HEAD(self):
            hub.requests.append(("HEAD", self.path, None))
            found = self._file()
            if found is None:
                return self._not_found()
            self._headers(200, found[1])

        def do_GET(self):
            range_header = self.headers.get("Range")
            hub.requests.append(("GET", self.path, range_header))
            found = self._file()
            if found is None:
                return self._not_found()
            content = found[1]
            start = int(range_header.split("=")[1].split("-")[0]) if range_header else 0
            self._headers(206 if start else 200, content, start)
            body = content[start:]
            if hub.drops > 0:
                hub.drops -= 1
                self.wfile.write(b"" if start else body[:hub.drop_after])  # a resumed GET gets nothing
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("RWKV_TUI_STATE_DIR", str(tmp_path / "state"))
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def tiny(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path / "src")
    return path.read_bytes()


# ---------------------------------------------------------------------------- catalogue


def test_catalogue_rows_are_complete_and_consistent():
    catalog = load_catalog()
    assert len(catalog) >= 10
    assert len({entry.name for entry in catalog}) == len(catalog)
    for entry in catalog:
        assert entry.hf_repo in ("BlinkDL/rwkv7-g1", "BlinkDL/rwkv-7-world"), entry.name
        assert entry.file.endswith(".pth") and entry.parameters.endswith("B")
        assert not entry.sha256 or len(entry.sha256) == 64
        # bf16 weights: two bytes a parameter, so the file size pins the shape (layers x width)
        if entry.file_size:
            n_params = rwkv7_spec(entry.n_layer, entry.n_embd).n_params
            assert abs(entry.file_size / 2 - n_params) / n_params < 0.01, entry.name
    sizes = {entry.parameters: (entry.n_layer, entry.n_embd) for entry in catalog}
    assert sizes["0.1B"] == (12, 768) and sizes["13.3B"] == (61, 4096)


def test_find_entry_suggests_close_names():
    assert find_entry("RWKV7-G1D-0.1B").n_embd == 768
    with pytest.raises(RwkvTuiError, match="did you mean rwkv7-g1d-0.1b"):
        find_entry("g1d-0.1b")


def test_method_fits_against_a_budget():
    entry = find_entry("rwkv7-g1d-0.1b")
    assert {fit.fits for fit in method_fits(entry, None)} == {None}
    fits = {fit.method: fit.fits for fit in method_fits(entry, 3 * 1024**3)}
    assert fits["state"] and fits["lora"] and not fits["full"]


def test_cli_list_and_info(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "rwkv7-g1d-0.1b" in out and "CPU only" in out
    assert main(["models", "info", "rwkv7-world-0.1b"]) == 0
    out = capsys.readouterr().out
    assert "BlinkDL/rwkv-7-world" in out and "unknown" in out  # no ModelScope location known
    assert main(["models", "info", "nope"]) == 2


# ---------------------------------------------------------------------------- downloads


def test_download_reports_progress_verifies_and_inspects(hub, tiny, tmp_path):
    hub.files["tiny.pth"] = tiny
    events = []
    result = download_model(HubFile(REPO, "tiny.pth", sha256=hashlib.sha256(tiny).hexdigest()),
                            tmp_path / "models", lambda done, total: events.append((done, total)))
    assert result.path == tmp_path / "models" / "tiny.pth" and result.path.read_bytes() == tiny
    assert result.spec.n_layer == 2 and result.spec.version == "x070"
    assert events[-1] == (len(tiny), len(tiny)) and len(events) >= 2
    assert [done for done, _ in events] == sorted(done for done, _ in events)


def test_download_into_the_hf_home_cache(hub, tiny, tmp_path):
    hub.files["tiny.pth"] = tiny
    result = download_model(HubFile(REPO, "tiny.pth"))
    assert str(result.path).startswith(str(tmp_path / "hf-home" / "hub"))


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)  # huggingface_hub backs off before retrying
    # huggingface_hub writes whole 10 MB chunks; smaller ones let a sub-MB file leave a partial behind
    monkeypatch.setattr("huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE", 64 * 1024)


def test_a_dropped_connection_resumes_with_a_range_request(hub, tiny, tmp_path, small_chunks):
    hub.files["tiny.pth"] = tiny
    hub.drop_after, hub.drops = len(tiny) // 3, 1
    result = download_model(HubFile(REPO, "tiny.pth"), tmp_path / "models")
    assert result.path.read_bytes() == tiny
    ranges = [r for method, _, r in hub.requests if method == "GET"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_an_interrupted_download_resumes_when_run_again(hub, tiny, tmp_path, small_chunks):
    hub.files["tiny.pth"] = tiny
    hub.drop_after, hub.drops = len(tiny) // 3, 100  # every attempt of the first run is cut short
    with pytest.raises(DownloadError, match="interrupted") as caught:
        download_model(HubFile(REPO, "tiny.pth"), tmp_path / "models")
    assert "run the same command again" in str(caught.value)
    assert not (tmp_path / "models" / "tiny.pth").exists()  # nothing that looks finished
    hub.drops, hub.requests[:] = 0, []
    result = download_model(HubFile(REPO, "tiny.pth"), tmp_path / "models")
    assert result.path.read_bytes() == tiny
    assert result.spec.n_layer == 2


def test_a_bad_checksum_is_refused_and_the_file_removed(hub, tiny, tmp_path):
    hub.files["tiny.pth"] = tiny
    with pytest.raises(DownloadError, match="checksum mismatch") as caught:
        download_model(HubFile(REPO, "tiny.pth", sha256="0" * 64), tmp_path / "models")
    assert "the file was removed" in str(caught.value)
    assert not (tmp_path / "models" / "tiny.pth").exists()


def test_a_missing_file_says_404(hub, tmp_path):
    with pytest.raises(DownloadError, match=r"not found \(404\): tiny/rwkv7/nope.pth"):
        download_model(HubFile(REPO, "nope.pth"), tmp_path / "models")


def test_no_network_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(DownloadError, match="no network") as caught:
        download_model(HubFile(REPO, "tiny.pth"), tmp_path / "models")
    assert "HF_ENDPOINT" in str(caught.value)


def test_free_space_is_checked_before_the_download(hub, tiny, tmp_path, monkeypatch):
    hub.files["tiny.pth"] = tiny
    monkeypatch.setattr(hub_download, "disk_space", lambda folder: DiskSpace(free_bytes=10, mount=Path("/")))
    with pytest.raises(DownloadError, match="not enough disk space"):
        download_model(HubFile(REPO, "tiny.pth"), tmp_path / "models")
    assert not [r for r in hub.requests if r[0] == "GET"]


def test_a_file_that_is_not_a_model_is_not_offered(hub, tmp_path):
    hub.files["notes.pth"] = b"not a checkpoint"
    with pytest.raises(DownloadError, match="not a checkpoint rwkv-tui can train"):
        download_model(HubFile(REPO, "notes.pth"), tmp_path / "models")


def test_modelscope_without_the_package_gives_the_install_line(tmp_path):
    with pytest.raises(DownloadError) as caught:
        download_model(HubFile("RWKV/rwkv7-g1", "x.pth", source="modelscope"), tmp_path)
    assert str(caught.value) == "ModelScope downloads need the modelscope package: pip install modelscope"


def test_cli_download_remembers_the_model(hub, tiny, tmp_path, capsys):
    from rwkv_tui.recent import recent_models

    hub.files["tiny.pth"] = tiny
    code = main(["models", "download", "--repo", REPO, "--file", "tiny.pth", "--dir", str(tmp_path / "m")])
    assert code == 0, capsys.readouterr().err
    assert "downloaded" in capsys.readouterr().out
    assert recent_models() == [str((tmp_path / "m" / "tiny.pth").resolve())]


def test_cli_download_errors_are_one_message(hub, tmp_path, capsys):
    assert main(["models", "download", "--repo", REPO, "--file", "gone.pth", "--dir", str(tmp_path)]) == 2
    assert "not found (404)" in capsys.readouterr().err
    assert main(["models", "download", "--repo", REPO]) == 2
    assert main(["models", "download", "rwkv7-world-0.1b", "--source", "modelscope"]) == 2
    assert "no ModelScope location" in capsys.readouterr().err
