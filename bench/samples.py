"""What samples while training cost: one round of output.sample_prompts (greedy, SAMPLE_TOKENS
tokens each, as the trainer's hook decodes them) against one training micro batch's forward and
backward, on a random model of a given shape.

A random model never writes the blank line that ends an answer, so every prompt runs the full
SAMPLE_TOKENS: the worst case of a round.

    python bench/samples.py [--layers 12 --embd 768 --prompts 3 --ctx-len 512 --repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, save_result  # noqa: E402

PROMPTS = ["What is 2 plus 3?", "Name a colour.", "Write a haiku about the sea."]


def main() -> None:
    import torch

    from rwkv_tui.trainer.model import model_from_state_dict
    from rwkv_tui.trainer.model.init import random_state_dict, rwkv7_spec
    from rwkv_tui.trainer.training import samples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--prompts", type=int, default=3, choices=range(1, len(PROMPTS) + 1))
    parser.add_argument("--ctx-len", type=int, default=512, help="the training micro batch's tokens (micro_bsz 1)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    spec = rwkv7_spec(args.layers, args.embd)
    model = model_from_state_dict(random_state_dict(spec), spec, dtype=torch.float32)
    prompts = PROMPTS[: args.prompts]
    with torch.no_grad():
        model.eval()
        samples.greedy_answer(model, prompts[0])  # warm-up (and the tokenizer's id table)
    rows = []
    for repeat in range(args.repeats):
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            for prompt in prompts:
                samples.greedy_answer(model, prompt)
        round_s = time.perf_counter() - start
        model.train()
        idx = torch.randint(1, 65530, (1, args.ctx_len))
        start = time.perf_counter()
        logits, _ = model(idx)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
        step_s = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        tokens = len(prompts) * samples.SAMPLE_TOKENS
        rows.append({"repeat": repeat + 1, "round_s": round_s, "ms_per_token": 1000 * round_s / tokens,
                     "train_micro_batch_s": step_s, "round_in_micro_batches": round_s / step_s})
    print_table(rows, ["repeat", "round_s", "ms_per_token", "train_micro_batch_s", "round_in_micro_batches"])
    summary = {"model": f"L{args.layers} C{args.embd} fp32 (random)", "prompts": len(prompts),
               "tokens_per_prompt": samples.SAMPLE_TOKENS, "train_micro_batch": f"1 x {args.ctx_len}",
               "torch_threads": torch.get_num_threads(),
               "load_average_1m_at_end": os.getloadavg()[0],  # other work on the machine skews the times
               "median_round_s": statistics.median(r["round_s"] for r in rows),
               "median_round_in_micro_batches": statistics.median(r["round_in_micro_batches"] for r in rows)}
    print(summary)
    print(save_result("samples", rows, {"summary": summary}))


if __name__ == "__main__":
    main()
