"""`rwkv-tui merge BASE.pth ADAPTER OUT.pth`: a full model in the official format."""

from __future__ import annotations

from rwkv_tui.trainer.config import DTYPE_NAMES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge", help="merge a LoRA/PiSSA/MiSS adapter or a tuned state into its base model",
        description="Write BASE + ADAPTER as one .pth with the official key names, loadable by the rwkv "
                    "package (RWKV Runner) and convertible for Ai00. Our adapter files carry their method, "
                    "rank and alpha; RWKV-PEFT's LoRA files need --lora-alpha.")
    parser.add_argument("base", help="the base model .pth the adapter was trained on")
    parser.add_argument("adapter", help="adapter or state file (ours or RWKV-PEFT's)")
    parser.add_argument("out", help="where to write the merged .pth")
    parser.add_argument("--lora-alpha", type=float, help="LoRA alpha, for files that do not record it")
    parser.add_argument("--dtype", choices=sorted(DTYPE_NAMES), default=None,
                        help="dtype of the output (default: the base's, bf16 for official models); the merge "
                             "itself is computed in fp32 and cast once")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    import torch

    from rwkv_tui.trainer.adapters import base_dtype, merge_files
    from rwkv_tui.trainer.checkpoint import inspect_checkpoint
    from rwkv_tui.trainer.errors import CheckpointError

    out = Path(args.out)
    if out.exists() and not args.force:
        raise CheckpointError("output exists", path=out, hint="choose another name or pass --force")
    if args.dtype:
        dtype, why = getattr(torch, DTYPE_NAMES[args.dtype]), "--dtype"
    else:
        dtype, why = base_dtype(inspect_checkpoint(args.base)), "the base model's dtype"
    merge_files(args.base, args.adapter, out, dtype=dtype, alpha=args.lora_alpha)
    print(f"wrote {out} ({str(dtype).removeprefix('torch.')}, {why})")
    return 0
