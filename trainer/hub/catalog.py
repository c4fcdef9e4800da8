"""The catalogue of official RWKV-7 checkpoints, shipped as data (`catalog.toml`).

Each row says where a checkpoint lives (Hugging Face, ModelScope), how big it is, its
shape and, where the publisher gives one, its SHA256. Empty fields mean "unknown": the
CLI prints "unknown" and the downloader skips that check. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from importlib import resources

from rwkv_tui.trainer.errors import RwkvTuiError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CATALOG_FILE = "catalog.toml"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    family: str
    parameters: str
    n_layer: int
    n_embd: int
    file_size: int | None
    ctx_len: int | None
    date: str
    hf_repo: str
    file: str
    modelscope_repo: str
    sha256: str

    @property
    def shape(self) -> str:
        return f"{self.n_layer}×{self.n_embd}"

    @property
    def size_text(self) -> str:
        return UNKNOWN if self.file_size is None else f"{self.file_size / 1e9:.2f} GB"

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for `models info`; unknown fields say so."""
        return [("name", self.name), ("family", self.family), ("parameters", self.parameters),
                ("layers × width", self.shape), ("file size", self.size_text),
                ("context", str(self.ctx_len) if self.ctx_len else UNKNOWN), ("date", self.date or UNKNOWN),
                ("Hugging Face", f"{self.hf_repo}/{self.file}" if self.hf_repo else UNKNOWN),
                ("ModelScope", f"{self.modelscope_repo}/{self.file}" if self.modelscope_repo else UNKNOWN),
                ("SHA256", self.sha256 or UNKNOWN)]


def _entry(row: dict) -> CatalogEntry:
    return CatalogEntry(
        name=row["name"], family=row.get("family", ""), parameters=row.get("parameters", ""),
        n_layer=int(row["n_layer"]), n_embd=int(row["n_embd"]),
        file_size=int(row["file_size"]) if row.get("file_size") else None,
        ctx_len=int(row["ctx_len"]) if row.get("ctx_len") else None,
        date=row.get("date", ""), hf_repo=row.get("hf_repo", ""), file=row["file"],
        modelscope_repo=row.get("modelscope_repo", ""), sha256=row.get("sha256", "").lower())


def load_catalog() -> list[CatalogEntry]:
    text = resources.files(__package__).joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    return [_entry(row) for row in tomllib.loads(text).get("model", [])]


def find_entry(name: str, catalog: list[CatalogEntry] | None = None) -> CatalogEntry:
    """The row called `name` (case-insensitive; the file name works too)."""
    catalog = load_catalog() if catalog is None else catalog
    wanted = name.strip().lower()
    for entry in catalog:
        if wanted in (entry.name.lower(), entry.file.lower()):
            return entry
    names = [entry.name for entry in catalog]
    close = difflib.get_close_matches(wanted, names, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise RwkvTuiError(f"no model called {name!r} in the catalogue",
                       hint=hint + "`rwkv-tui models list` shows the names; for any other hub file use "
                                   "`rwkv-tui models download --repo OWNER/NAME --file FILE`")


@dataclass(frozen=True)
class MethodFit:
    method: str
    gb: float
    fits: bool | None  # None: no GPU to fit against


def method_fits(entry: CatalogEntry, free_bytes: float | None) -> list[MethodFit]:
    """Each method's estimate (its default settings) for this model against `free_bytes`."""
    from rwkv_tui.trainer.config import METHODS, RunConfig
    from rwkv_tui.trainer.model.init import rwkv7_spec
    from rwkv_tui.trainer.vram import GB, estimate

    spec = rwkv7_spec(entry.n_layer, entry.n_embd)
    fits = []
    for method in METHODS:
        total = estimate(spec, RunConfig.for_method(method)).total
        fits.append(MethodFit(method, total / GB, None if free_bytes is None else total <= free_bytes))
    return fits


def fits_text(fits: list[MethodFit]) -> str:
    if not fits or fits[0].fits is None:
        return "no GPU"
    names = [fit.method for fit in fits if fit.fits]
    return ", ".join(names) if names else "none"
