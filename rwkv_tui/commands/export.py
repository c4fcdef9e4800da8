"""`rwkv-tui export FILE --ai00 OUT.st`: a model or state file for Ai00."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="convert a model or state .pth for Ai00 (safetensors, fp16)",
        description="Write a merged model or a state file as safetensors the way Ai00 loads them "
                    "(fp16; states transposed). Adapters must be merged first (`rwkv-tui merge`).")
    parser.add_argument("source", help="a model .pth or a state .pth")
    parser.add_argument("--ai00", metavar="OUT.st", required=True, help="output safetensors file")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.export import export_ai00

    print(f"wrote {export_ai00(args.source, args.ai00)}")
    return 0
