"""`rwkv-tui data check|prepare`: validate a jsonl, and turn it into World-tokenized binidx."""

from __future__ import annotations

import json

EXIT_DATA_ERRORS = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="check a jsonl dataset, or prepare binidx from it",
                                   description="Find every problem in a training jsonl before training, "
                                               "and convert it to binidx for rwkv-tui or RWKV-LM.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="report problems by line, formats, token lengths (file untouched)")
    check.add_argument("file")
    check.add_argument("--ctx-len", type=int, default=1024, help="context length to check truncation against")
    check.add_argument("--micro-bsz", type=int, default=1, help="micro batch size for the steps estimate")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=run_check)
    prepare = actions.add_parser("prepare", help="repeat + shuffle + tokenize into PREFIX.bin/.idx")
    prepare.add_argument("file")
    prepare.add_argument("--out", required=True, metavar="PREFIX", help="output prefix (writes PREFIX.bin/.idx)")
    prepare.add_argument("--repeat", type=int, default=1, help="copies of the data, each shuffled (default 1)")
    prepare.add_argument("--ctx-len", type=int, default=1024, help="for the printed --magic_prime (default 1024)")
    prepare.add_argument("--seed", type=int, default=0, help="shuffle seed")
    prepare.add_argument("--sft-mask", action="store_true", help="also write PREFIX.sftmask (trained tokens)")
    prepare.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    prepare.add_argument("--force", action="store_true", help="overwrite existing output")
    prepare.set_defaults(handler=run_prepare)


def run_check(args) -> int:
    from rwkv_tui.trainer.data.check import check_jsonl

    if args.json:
        report = check_jsonl(args.file, ctx_len=args.ctx_len, micro_bsz=args.micro_bsz)
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else EXIT_DATA_ERRORS
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console()
    with Progress(TextColumn("checking"), BarColumn(), TransferSpeedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("check", total=None)
        report = check_jsonl(args.file, ctx_len=args.ctx_len, micro_bsz=args.micro_bsz,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    from rwkv_tui.render import data_report

    console.print(data_report(report))
    return 0 if report.ok else EXIT_DATA_ERRORS


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

        result = prepare_binidx(args.file, args.out, repeat=args.repeat, ctx_len=args.ctx_len, seed=args.seed,
                                sft_mask=args.sft_mask, force=args.force, workers=args.workers, progress=progress)
    console.print(f"wrote {result.prefix}.bin/.idx: {result.documents:,} documents, {result.tokens:,} tokens")
    console.print(f"for RWKV-LM's train.py: {result.rwkv_lm_args}")
    return 0
