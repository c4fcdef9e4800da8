"""`rwkv-tui eval MODEL DATA [--adapter A ... | --state S] [--ctx-len L] [--mask none|sft] [--json]`:
the model's cross-entropy on a data file, the number a run's validation loss reports.

One model (the base, or the base with one adapter or state) prints its loss, perplexity, scored
tokens and documents, then one line per record format. Several adapters print a side-by-side
table, the base model first.

`--json` prints exactly one JSON object. For one model:

    {"loss": x, "ppl": x, "tokens": n, "documents": n, "formats": {"<format>": {loss, ppl, tokens, documents}},
     "model": path, "adapter": path | null, "ctx_len": L, "mask": "none" | "sft"}

For several adapters, the same per model in "results" (the base first, "adapter": null),
with the shared settings at the top:

    {"results": [{"model", "adapter", "loss", "ppl", "tokens", "documents", "formats"}, ...],
     "documents": n, "ctx_len": L, "mask": "none" | "sft"}
"""

from __future__ import annotations

import json
import sys

MASK_CHOICES = ("none", "sft")  # trainer.evaluation.MASKS; repeated here: this module must not import torch


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="score a model (with adapters or a tuned state) on a data file: loss and perplexity",
        description="The token-weighted mean next-token cross-entropy (nats) over every document of DATA, "
                    "each followed by the end token and its first token not predicted, as training and its "
                    "validation loss compute it. Documents longer than --ctx-len are scored in windows "
                    "that carry the RNN state.")
    parser.add_argument("model", help="base (or merged) model .pth")
    parser.add_argument("data", help="a record file the data reader accepts (.jsonl, .json, .parquet, .csv, "
                                     ".tsv, .arrow or a `datasets` folder)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--adapter", action="append", default=[],
                       help="an adapter (or state) file merged in memory; repeat it for a side-by-side table "
                            "with the base model")
    group.add_argument("--state", help="a state file to mount (state tuning output)")
    parser.add_argument("--lora-alpha", type=float, help="alpha for adapter files that do not record it")
    parser.add_argument("--ctx-len", type=int, default=None,
                        help="tokens per window (default: data.ctx_len's default); longer documents carry the state")
    parser.add_argument("--mask", choices=MASK_CHOICES, default="none",
                        help="none: score every token; sft: only the trained spans (Assistant/Response answers)")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.config import DataConfig
    from rwkv_tui.trainer.errors import RwkvTuiError
    from rwkv_tui.trainer.evaluation import read_documents

    ctx_len = args.ctx_len if args.ctx_len is not None else DataConfig().ctx_len
    if ctx_len < 1:
        raise RwkvTuiError(f"--ctx-len must be at least 1, got {ctx_len}", hint="e.g. --ctx-len 1024")
    device = _device(args.device)
    documents = read_documents(args.data, args.mask)
    candidates = [None, *args.adapter] if len(args.adapter) > 1 else [args.adapter[0] if args.adapter else None]
    results = [_evaluate_one(args, adapter, documents, ctx_len, device) for adapter in candidates]
    settings = {"ctx_len": ctx_len, "mask": args.mask}
    if len(results) == 1:
        if args.json:
            print(json.dumps({**results[0], **settings}))
        else:
            _print_one(results[0], settings)
    elif args.json:
        print(json.dumps({"results": results, "documents": len(documents), **settings}))
    else:
        _print_table(results, settings)
    return 0


def _evaluate_one(args, adapter: str | None, documents, ctx_len: int, device) -> dict:
    from rwkv_tui.trainer.evaluation import evaluate
    from rwkv_tui.trainer.generate import load_for_chat

    model = load_for_chat(args.model, adapter=adapter, state=args.state, lora_alpha=args.lora_alpha)
    model = model.to(device).eval()
    scores = evaluate(model, documents, ctx_len, device=device).as_dict()
    return {"model": args.model, "adapter": adapter or args.state, **scores}


def _device(name: str):
    import torch

    from rwkv_tui.trainer.errors import RwkvTuiError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RwkvTuiError(f"unknown device {name!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RwkvTuiError(f"--device {name}: no CUDA GPU was found", hint="use --device cpu (or auto)")
    return device


def _print_one(result: dict, settings: dict) -> None:
    name = result["adapter"] or result["model"]
    print(f"{name}: loss {result['loss']:.4f} nats, ppl {result['ppl']:.4g}, {result['tokens']:,} tokens scored "
          f"in {result['documents']:,} documents (ctx_len {settings['ctx_len']}, mask {settings['mask']})")
    for fmt, score in result["formats"].items():
        print(f"  {fmt}: loss {score['loss']:.4f}, ppl {score['ppl']:.4g}, {score['tokens']:,} tokens, "
              f"{score['documents']:,} documents")


def _print_table(results: list[dict], settings: dict) -> None:
    """Models in rows; loss, ppl and tokens, then each format's loss in a column of its own."""
    formats = list(dict.fromkeys(f for r in results for f in r["formats"])) if _several_formats(results) else []
    header = ["model", "loss", "ppl", "tokens", *(f"loss {f}" for f in formats)]
    rows = [header]
    for r in results:
        rows.append([r["adapter"] or f"{r['model']} (base)", f"{r['loss']:.4f}", f"{r['ppl']:.4g}",
                     f"{r['tokens']:,}", *(f"{r['formats'][f]['loss']:.4f}" if f in r["formats"] else "-"
                                          for f in formats)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print(f"(ctx_len {settings['ctx_len']}, mask {settings['mask']}, {results[0]['documents']:,} documents)",
          file=sys.stdout)


def _several_formats(results: list[dict]) -> bool:
    return any(len(r["formats"]) > 1 for r in results)
