"""`rwkv-tui data check|prepare|convert`: validate record files, turn them into World-tokenized
binidx, or into the `{"text": …}` jsonl they are trained as."""

from __future__ import annotations

import json
from pathlib import Path

EXIT_DATA_ERRORS = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="check a jsonl dataset, or prepare binidx from it",
                                   description="Find every problem in a training jsonl before training, "
                                               "and convert it to binidx for rwkv-tui or RWKV-LM.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="report problems by line, formats, token lengths (file untouched)")
    check.add_argument("files", nargs="+", metavar="FILE", help="record files (several: duplicates across them too)")
    check.add_argument("--ctx-len", type=int, default=1024, help="context length to check truncation against")
    check.add_argument("--micro-bsz", type=int, default=1, help="micro batch size for the steps estimate")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                       help="show the sizes of the split that holds out this share of the documents")
    check.add_argument("--val", metavar="FILE", help="show the size of this validation file (checked for overlap)")
    check.add_argument("--seed", type=int, default=0, help="seed of the held-out choice (training: output.seed)")
    check.set_defaults(handler=run_check)
    prepare = actions.add_parser("prepare", help="repeat + shuffle + tokenize into PREFIX.bin/.idx")
    prepare.add_argument("files", nargs="+", metavar="FILE", help="record files, tokenized together")
    prepare.add_argument("--out", required=True, metavar="PREFIX", help="output prefix (writes PREFIX.bin/.idx)")
    prepare.add_argument("--repeat", type=int, default=1, help="copies of the data, each shuffled (default 1)")
    prepare.add_argument("--ctx-len", type=int, default=1024, help="for the printed --magic_prime (default 1024)")
    prepare.add_argument("--seed", type=int, default=0, help="shuffle seed")
    prepare.add_argument("--sft-mask", action="store_true", help="also write PREFIX.sftmask (trained tokens)")
    prepare.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    prepare.add_argument("--force", action="store_true", help="overwrite existing output")
    prepare.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                         help="hold out this share of the documents (before repeats) as PREFIX.val.jsonl")
    prepare.set_defaults(handler=run_prepare)
    convert = actions.add_parser("convert", help='write the {"text": …} lines training makes of record files')
    convert.add_argument("files", nargs="+", metavar="IN", help="record files (chat, ShareGPT, Alpaca, …)")
    convert.add_argument("--out", required=True, metavar="OUT.jsonl", help="the jsonl to write")
    convert.add_argument("--force", action="store_true", help="overwrite an existing output")
    convert.set_defaults(handler=run_convert)


def run_check(args) -> int:
    from rwkv_tui.trainer.data.check import check_files, check_jsonl

    split = {"val_fraction": args.val_fraction, "val_path": args.val, "seed": args.seed}
    if args.json:
        if len(args.files) == 1:  # one file: its own report, as before several could be checked
            report = check_jsonl(args.files[0], ctx_len=args.ctx_len, micro_bsz=args.micro_bsz, **split)
        else:
            report = check_files(args.files, ctx_len=args.ctx_len, micro_bsz=args.micro_bsz, **split)
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else EXIT_DATA_ERRORS
    if len(args.files) > 1:
        return _check_several(args, split)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console()
    with Progress(TextColumn("checking"), BarColumn(), TransferSpeedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("check", total=None)
        report = check_jsonl(args.files[0], ctx_len=args.ctx_len, micro_bsz=args.micro_bsz,
                             progress=lambda done, total: bar.update(task, completed=done, total=total), **split)
    from rwkv_tui.render import data_report

    console.print(data_report(report))
    console.print(f"detected: {report.detected}", highlight=False)
    if report.val_fraction > 0 or report.val_path:
        console.print(split_line(report))
    return 0 if report.ok else EXIT_DATA_ERRORS


def _check_several(args, split: dict) -> int:
    """Each file's report (and split), then the texts the files share."""
    from rich.console import Console

    from rwkv_tui.render import data_report

    console = Console()
    reports = []
    for path in args.files:
        reports.append(_check_with_bar(path, args, console, split))
        console.print(data_report(reports[-1]))
        console.print(f"detected: {reports[-1].detected}", highlight=False)
        if reports[-1].val_fraction > 0 or reports[-1].val_path:
            console.print(split_line(reports[-1]))
    _print_cross_duplicates(args.files, console)
    return 0 if all(report.ok for report in reports) else EXIT_DATA_ERRORS


def _check_with_bar(path: str, args, console, split: dict):
    from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

    from rwkv_tui.trainer.data.check import check_jsonl

    with Progress(TextColumn(f"checking {path}"), BarColumn(), TransferSpeedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("check", total=None)
        return check_jsonl(path, ctx_len=args.ctx_len, micro_bsz=args.micro_bsz,
                           progress=lambda done, total: bar.update(task, completed=done, total=total), **split)


def _print_cross_duplicates(paths: list[str], console) -> None:
    """The texts several files share: each weighs more than its file's repeat says."""
    from rwkv_tui.trainer.data.check import cross_file_duplicates

    count, examples = cross_file_duplicates(paths)
    console.print(f"duplicates across files: {count:,}", style="bold yellow" if count else "bold green")
    for dup in examples:
        console.print(f"  {dup.path} line {dup.line}: same text as {dup.first_path} line {dup.first_line}",
                      soft_wrap=True, highlight=False)  # paths unbroken
    if count > len(examples):
        console.print(f"  … and {count - len(examples):,} more")
    if count:
        console.print("  fix: remove them from one file; use repeat to weigh a file on purpose", style="italic")


def split_line(report) -> str:
    """Both sides of the validation split, as training would make it."""
    source = report.val_path or f"val_fraction {report.val_fraction:g}"
    return (f"split: train {report.train_documents:,} documents ({report.train_tokens:,} tokens), "
            f"validation {report.val_documents:,} documents ({report.val_tokens:,} tokens) from {source}")


def run_prepare(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rwkv_tui.trainer.data.prepare import prepare_binidx

    console = Console()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int, tokens: int) -> None:
            if phase not in tasks:
                label = "tokenizing (chunks)" if phase == "tokenize" else "writing (repeats)"
                tasks[phase] = bar.add_task(label, total=total, rate="")
            elapsed = bar.tasks[tasks[phase]].elapsed or 0
            rate = f"{tokens / elapsed:,.0f} tokens/s" if elapsed > 0 else ""
            bar.update(tasks[phase], completed=done, rate=rate)

        sources = args.files[0] if len(args.files) == 1 else args.files
        result = prepare_binidx(sources, args.out, repeat=args.repeat, ctx_len=args.ctx_len, seed=args.seed,
                                sft_mask=args.sft_mask, force=args.force, workers=args.workers, progress=progress,
                                val_fraction=args.val_fraction)
    console.print(f"wrote {result.prefix}.bin/.idx: {result.documents:,} documents, {result.tokens:,} tokens")
    if result.val_path is not None:
        console.print(f"held out {result.val_documents:,} documents for validation: {result.val_path}")
    console.print(f"for RWKV-LM's train.py: {result.rwkv_lm_args}")
    return 0


def run_convert(args) -> int:
    from rwkv_tui.trainer.atomic import atomic_output
    from rwkv_tui.trainer.data.records import detected_format

    out = Path(args.out)
    _check_convert_paths(args.files, out, args.force)
    counts = []
    with atomic_output(out, "w") as handle:  # nothing at OUT unless every record converts
        for path in args.files:
            counts.append(_write_texts(path, handle))
    for path, count in zip(args.files, counts):
        detected = detected_format(path)
        print(f"{path}: {count:,} records" + (f" (detected: {detected})" if detected else ""))
    print(f"wrote {out}: {sum(counts):,} records from {len(args.files)} file(s)")
    return 0


def _check_convert_paths(files: list[str], out: Path, force: bool) -> None:
    from rwkv_tui.trainer.errors import DataError

    if out.suffix != ".jsonl":
        raise DataError("the output must be a .jsonl file", path=out, hint="e.g. --out converted.jsonl")
    if out.exists() and any(Path(path).exists() and Path(path).resolve() == out.resolve() for path in files):
        raise DataError("the output is one of the inputs", path=out, hint="choose another --out")
    if out.exists() and not force:
        raise DataError("output exists", path=out, hint="choose another --out or pass --force")


def _write_texts(path: str, handle) -> int:
    """One `{"text": …}` line per record of `path`; the first bad record stops it, named."""
    from rwkv_tui.trainer.data.records import training_texts
    from rwkv_tui.trainer.errors import DataError

    if not Path(path).exists():
        raise DataError("data file not found", path=path)
    count = 0
    for text in training_texts(path):
        handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        count += 1
    return count


    try:
        return detect_format(path)
    except (OSError, ValueError):
        return None
