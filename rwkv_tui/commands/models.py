"""`rwkv-tui models list|info|download`: the catalogue of official RWKV-7 checkpoints and the downloader."""

from __future__ import annotations

from rwkv_tui.trainer.errors import RwkvTuiError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list, describe and download official RWKV-7 checkpoints",
        description="The catalogue of official RWKV-7 checkpoints (G1 family and World) and a downloader. "
                    "Downloads honour HF_ENDPOINT (mirrors) and HF_HOME (cache), and resume.")
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the catalogue, with the methods that fit this machine's GPU")
    listing.set_defaults(handler=run_list)

    info = actions.add_parser("info", help="every fact the catalogue has about one model")
    info.add_argument("name", help="a name from `rwkv-tui models list`")
    info.set_defaults(handler=run_info)

    download = actions.add_parser(
        "download", help="download a catalogue model, or any hub file with --repo/--file",
        description="Download, verify the SHA256 (when the publisher gives one) and read the checkpoint. "
                    "An interrupted download resumes when you run the same command again.")
    download.add_argument("name", nargs="?", help="a name from `rwkv-tui models list`")
    download.add_argument("--repo", help="any hub repository, OWNER/NAME (with --file)")
    download.add_argument("--file", help="the file in --repo to download")
    download.add_argument("--source", choices=("hf", "modelscope"), default="hf",
                          help="Hugging Face (default; honours HF_ENDPOINT) or ModelScope (needs `pip install modelscope`)")
    download.add_argument("--dir", help="download into this folder instead of the hub's cache (HF_HOME)")
    download.set_defaults(handler=run_download)


def run_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rwkv_tui.trainer.hub.catalog import fits_text, load_catalog, method_fits

    free, gpu_line = _gpu_budget()
    table = Table(title="RWKV-7 checkpoints", caption=gpu_line)
    table.add_column("name", no_wrap=True)
    for column in ("params", "L×C", "size", "ctx", "date", "fits this GPU"):
        table.add_column(column)
    for entry in load_catalog():
        table.add_row(entry.name, entry.parameters, entry.shape, entry.size_text, str(entry.ctx_len or "unknown"),
                      entry.date or "unknown", fits_text(method_fits(entry, free)))
    Console().print(table)
    return 0


def _gpu_budget() -> tuple[float | None, str]:
    """Free memory of the first GPU, and a line saying what the fits column is measured against."""
    from rwkv_tui.trainer.hardware import detect_gpus

    gpus = detect_gpus()
    if not gpus:
        return None, "CPU only: no GPU detected, so no method is checked against GPU memory"
    gpu = gpus[0]
    return float(gpu.free_bytes), (f"fits: methods (default settings) whose estimate fits "
                                   f"{gpu.free_bytes / 1024**3:.1f} GB free on {gpu.name}")


def run_info(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rwkv_tui.trainer.hub.catalog import find_entry, method_fits

    entry = find_entry(args.name)
    free, gpu_line = _gpu_budget()
    table = Table(title=entry.name, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for label, value in entry.rows():
        table.add_row(label, value)
    for fit in method_fits(entry, free):
        verdict = "" if fit.fits is None else ("  fits" if fit.fits else "  does not fit")
        table.add_row(f"VRAM {fit.method}", f"{fit.gb:.1f} GB{verdict}")
    Console().print(table)
    Console().print(gpu_line)
    return 0


def run_download(args) -> int:
    from rwkv_tui.recent import remember_model
    from rwkv_tui.trainer.hub.download import download_model

    hub_file = _hub_file(args)
    with _RichProgress(hub_file.file) as progress:
        result = download_model(hub_file, args.dir, progress.update)
    remember_model(str(result.path))
    print(f"downloaded {result.path}")
    print(f"  {result.spec.version}, {result.spec.n_layer} layers × {result.spec.n_embd}, "
          f"vocab {result.spec.vocab_size}: ready for `rwkv-tui train` or the wizard")
    return 0


def _hub_file(args):
    from rwkv_tui.trainer.hub.catalog import find_entry
    from rwkv_tui.trainer.hub.download import HubFile

    if args.repo or args.file:
        if args.name or not (args.repo and args.file):
            raise RwkvTuiError("download takes either a catalogue NAME or both --repo OWNER/NAME and --file FILE",
                               hint="e.g. rwkv-tui models download --repo BlinkDL/rwkv7-g1 --file FILE.pth")
        return HubFile(args.repo, args.file, args.source, revision="main" if args.source == "hf" else "master")
    if not args.name:
        raise RwkvTuiError("download needs a model NAME (or --repo and --file)",
                           hint="`rwkv-tui models list` shows the names")
    return HubFile.from_entry(find_entry(args.name), args.source)


class _RichProgress:
    """A rich progress bar fed by the downloader's (done, total) reports."""

    def __init__(self, label: str) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress("[bold]{task.description}", BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
        self.task = self.progress.add_task(label, total=None)

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, done: int, total: int | None) -> None:
        self.progress.update(self.task, completed=done, total=total)

