"""`rwkv-tui export SOURCE (--ai00 OUT.st | --hf OUT_DIR | --gguf OUT.gguf)`: a model (or a state
file, for Ai00) in the format another runtime loads; `--adapter` merges an adapter in memory first."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="convert a model for Ai00, Hugging Face (fla) or llama.cpp/Ollama (GGUF)",
        description="Write a model as Ai00 safetensors (a state file too), a Hugging Face folder in the "
                    "fla-hub RWKV7 layout, or a GGUF file for llama.cpp, Ollama and LM Studio. "
                    "--adapter merges a LoRA/PiSSA/MiSS adapter (or an x060/x052 state) in memory first.")
    parser.add_argument("source", help="a model .pth (or, with --ai00, a state .pth)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--ai00", metavar="OUT.st", help="Ai00 safetensors file (fp16)")
    target.add_argument("--hf", metavar="OUT_DIR", help="Hugging Face folder (fla-hub RWKV7 layout)")
    target.add_argument("--gguf", metavar="OUT.gguf", help="GGUF file for llama.cpp / Ollama / LM Studio")
    parser.add_argument("--outtype", metavar="TYPE",
                        help="GGUF: f32|f16|bf16|q8_0 (f16); Hugging Face: f32|f16|bf16 (the base's dtype)")
    parser.add_argument("--adapter", metavar="FILE", help="merge this adapter into SOURCE in memory first")
    parser.add_argument("--lora-alpha", type=float, help="LoRA alpha, for adapter files that do not record it")
    parser.add_argument("--force", action="store_true", help="replace the output if it exists")
    parser.set_defaults(handler=run)


def run(args) -> int:
    print("loading model", flush=True)
    if args.ai00:
        written = _run_ai00(args)
    elif args.hf:
        from rwkv_tui.trainer.export_hf import export_hf

        written = export_hf(args.source, args.hf, outtype=args.outtype, adapter=args.adapter, force=args.force,
                            alpha=args.lora_alpha, progress=_print_progress)
    else:
        from rwkv_tui.trainer.export_gguf import export_gguf

        written = export_gguf(args.source, args.gguf, outtype=args.outtype or "f16", adapter=args.adapter,
                              force=args.force, alpha=args.lora_alpha, progress=_print_progress)
    print(f"wrote {written}")
    return 0


def _print_progress(done: int, total: int) -> None:
    """`tensor i/N` on one line (carriage returns), then a newline; the dashboard reads it."""
    import sys

    sys.stdout.write(f"tensor {done}/{total}" + ("\n" if done == total else "\r"))
    sys.stdout.flush()


def _run_ai00(args):
    """Ai00: the file itself, or (with --adapter) the merge written to a temporary .pth first,
    because the Ai00 converter reads a file."""
    import tempfile
    from pathlib import Path

    from rwkv_tui.trainer.checkpoint import save_state_dict
    from rwkv_tui.trainer.errors import ConfigError
    from rwkv_tui.trainer.export import export_ai00
    from rwkv_tui.trainer.export_common import ensure_output_free, load_export_source

    if args.outtype is not None:
        raise ConfigError("--outtype does not apply to --ai00 (Ai00 files are fp16)", field="--outtype",
                          hint="drop --outtype")
    out = Path(args.ai00)
    ensure_output_free(out, args.force)
    if args.adapter is None:
        return export_ai00(args.source, out)
    merged = load_export_source(args.source, args.adapter, args.lora_alpha)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as folder:
        staged = save_state_dict(merged.tensors, Path(folder) / "merged.pth", dtype=None)
        return export_ai00(staged, out)
