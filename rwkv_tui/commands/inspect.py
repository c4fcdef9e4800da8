"""`rwkv-tui inspect MODEL.pth`: what a checkpoint is, read from its weights."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show a checkpoint's architecture (version, layers, width, heads, vocab, parameters)",
        description="Read an RWKV .pth checkpoint and print its architecture. Nothing is typed by hand: "
                    "every figure comes from the tensors in the file.",
    )
    parser.add_argument("model", help="path to an RWKV .pth checkpoint")
    parser.add_argument("--json", action="store_true", help="print the spec as JSON (for scripts)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.checkpoint import inspect_checkpoint

    spec = inspect_checkpoint(args.model)
    if args.json:
        print(json.dumps(spec.to_dict(), indent=2))
        return 0
    from rich.console import Console

    from rwkv_tui.render import spec_table

    Console().print(spec_table(spec, title=str(args.model)))
    return 0
