"""Samples while training: the run's own weights answer `output.sample_prompts` as it learns.

A `PeriodicHook` (built when the prompts are set): before the first step, every
`output.sample_every` steps and at the end, each prompt is answered and written as

    {"kind": "sample", "step": N, "prompt": "<as configured>", "text": "<the answer>"}

so the dashboard can show the latest answers next to the step-0 ones.

- A prompt without a role (`User:`, `Instruction:`, … as the SFT mask knows them) is asked as a
  chat turn, `User: …\\n\\nAssistant:` (`generate.chat_prompt`); one with roles gets the answer
  role its last turn calls for; one that ends in an answer turn is continued as it stands.
- Decoding is greedy, at most SAMPLE_TOKENS tokens, ending at the blank line that ends a turn
  or at the end token. Greedy answers depend on the weights alone: the same weights give the
  same text at every step and after a resume, and no random number is drawn, so the training
  RNG that a resume restores exactly is not touched (the decode also runs inside `fork_rng`,
  which would put back anything a model layer drew).
- The weights are the training model's own, in eval mode under no_grad (`PeriodicHook`), past
  Fabric's wrapper (no DDP collective in a forward only rank 0 makes) but under Fabric's
  autocast, so bf16-mixed runs decode as they train. Adapters are live in that model: nothing
  is merged.
- Several processes: rank 0 alone decodes, the others go on to the next step and wait for it at
  their first collective. Under DeepSpeed ZeRO-3 every forward gathers the partitioned weights
  from all ranks, so there every rank decodes the same prompts, and rank 0's token is broadcast
  at each step, so all make the same forward calls and stop together.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from rwkv_tui.trainer.data.sft import ANSWER_ROLES, role_spans
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.training.hooks import PeriodicHook
from rwkv_tui.trainer.training.setup import fabric_unwrap

if TYPE_CHECKING:
    from rwkv_tui.trainer.training.loop import RunContext

SAMPLE_TOKENS = 80
STOP = "\n\n"  # the blank line that ends a turn
END_OF_TEXT = 0


def sample_hooks(ctx: RunContext) -> list[PeriodicHook]:
    """The run's sample hook, or none when the config sets no sample_prompts."""
    output = ctx.config.output
    if not output.sample_prompts:
        return []
    samples = Samples(ctx, list(output.sample_prompts))
    return [PeriodicHook(every=output.sample_every, run=samples, at_start=True, at_end=True)]


def sample_prompt(prompt: str) -> str:
    """What the model is given for a configured prompt (see the module's docstring)."""
    from rwkv_tui.trainer.generate import chat_prompt

    text = prompt.strip()
    spans = role_spans(text)
    if not spans:
        return chat_prompt([], text)
    last = spans[-1][0]
    if last in ANSWER_ROLES:
        return text
    return f"{text}\n\n{'Response' if last in ('Instruction', 'Input') else 'Assistant'}:"


class Samples:
    """Answers the prompts on call (a `PeriodicHook.run`) and writes one `sample` event each."""

    def __init__(self, ctx: RunContext, prompts: list[str]) -> None:
        from rwkv_tui.trainer.world_tokenizer import get_tokenizer

        vocab_size = ctx.spec.vocab_size
        for prompt in prompts:  # checked before the first step, not when the first sample is due
            ids = get_tokenizer().encode(sample_prompt(prompt))
            if not ids or max(ids) >= vocab_size:
                raise ConfigError(f"the sample prompt {prompt!r} does not fit the model's vocabulary of "
                                  f"{vocab_size:,} tokens", field="output.sample_prompts",
                                  hint="sample prompts need a model with the RWKV World vocabulary")
        self.prompts = prompts
        # Under ZeRO-3 a forward pass is a collective: every rank must decode, in step.
        self.every_rank = ctx.fabric.world_size > 1 and ctx.config.hardware.strategy.startswith("deepspeed_stage_3")

    def __call__(self, ctx: RunContext) -> None:
        if not (ctx.is_global_zero or self.every_rank):
            return
        fabric = ctx.fabric
        agree = (lambda token: fabric.broadcast(token, src=0)) if self.every_rank else None
        model = fabric_unwrap(ctx.model)
        started = time.perf_counter()
        devices = [fabric.device] if fabric.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), fabric.autocast():
            answers = [greedy_answer(model, prompt, fabric.device, agree) for prompt in self.prompts]
        for prompt, text in zip(self.prompts, answers):
            ctx.log.emit("sample", step=ctx.step, prompt=prompt, text=text)
        ctx.log.log(f"samples at step {ctx.step}: {len(answers)} prompt(s) answered in "
                    f"{time.perf_counter() - started:.1f} s")


def greedy_answer(model, prompt: str, device: torch.device | str | None = None,
                  agree: Callable[[int], int] | None = None) -> str:
    """`model`'s greedy answer to a configured prompt (`sample_prompt`): up to SAMPLE_TOKENS tokens,
    cut at STOP, the RNN state carried from token to token. `agree(token)` returns the token all
    ranks use (ZeRO-3: rank 0's)."""
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    device = device if device is not None else model.emb.weight.device
    allowed = _decodable_ids(model.spec.vocab_size).to(device)
    logits, state = model(torch.tensor([tokenizer.encode(sample_prompt(prompt))], device=device))
    tokens: list[int] = []
    for _ in range(SAMPLE_TOKENS):
        token = int(torch.argmax(logits[0, -1].float().masked_fill(~allowed, -torch.inf)))
        if agree is not None:
            token = agree(token)
        if token == END_OF_TEXT:
            break
        tokens.append(token)
        if STOP.encode() in tokenizer.decode_bytes(tokens[-8:]):  # a blank line just ended the turn
            break
        logits, state = model(torch.tensor([[token]], device=device), state)
    return tokenizer.decode_bytes(tokens).decode("utf-8", errors="replace").split(STOP, 1)[0].strip()


@functools.lru_cache(maxsize=4)
def _decodable_ids(vocab_size: int) -> torch.Tensor:
    """bool[vocab_size]: the ids that are text (or the end token). A barely trained model may
    rank an id the World vocabulary leaves unused first; greedy decoding passes over it."""
    from rwkv_tui.trainer.data.tokenize import token_byte_lengths
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    lengths = torch.from_numpy(token_byte_lengths(get_tokenizer()).copy())
    allowed = torch.zeros(vocab_size, dtype=torch.bool)  # a head wider than the vocabulary: the rest is no text
    shared = min(vocab_size, len(lengths))
    allowed[:shared] = lengths[:shared] > 0
    allowed[END_OF_TEXT] = True
    return allowed
