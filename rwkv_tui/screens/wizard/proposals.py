"""Settings proposed from the checked data: ctx_len, loading, epoch_steps and sample prompts.

The tutorials' defaults (ctx_len 1024, 1000 steps per epoch) suit none of the small data sets a
first fine-tune uses: 29 samples would be seen 35 times per epoch, mostly as padding. Once the
data check has counted the tokens of every sample, each setting follows from the data, with one
line saying why, and the user can still change it in the Parameters step. Pure functions of the
check report (no torch), so they are tested without the UI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

CTX_MULTIPLE = 64        # the CUDA/Triton kernels work in chunks of 16; 64 keeps the proposal round
PACK_BELOW_FILL = 0.25   # pad wastes over 75% of every sample below this fill: pack instead
SAMPLE_PROMPTS = 3
PROMPT_CHARS = 200       # a prompt longer than this is cut (at a word): a sample should stay readable


@dataclass(frozen=True)
class Proposal:
    field: str     # dotted RunConfig field
    value: Any
    reason: str    # one line: why this value


def rounded_up(tokens: int, multiple: int = CTX_MULTIPLE) -> int:
    return max(multiple, math.ceil(tokens / multiple) * multiple)


def propose_ctx_len(p95: int, fits: Callable[[int], bool] | None = None, where: str = "") -> Proposal:
    """The 95th percentile of the token lengths rounded up to a multiple of 64, lowered until the
    memory estimate `fits` (None: no GPU to fit, e.g. on the CPU)."""
    wanted = rounded_up(p95)
    ctx_len = wanted
    while fits is not None and ctx_len > CTX_MULTIPLE and not fits(ctx_len):
        ctx_len -= CTX_MULTIPLE
    reason = f"95% of the samples have at most {p95:,} tokens (rounded up to a multiple of {CTX_MULTIPLE})"
    if ctx_len < wanted:
        reason += f"; capped from {wanted:,} by the free memory{where}"
    return Proposal("data.ctx_len", ctx_len, reason)


def padding_fill(token_counts: list[int], ctx_len: int) -> float:
    """Share of a padded sample's ctx_len + 1 positions that hold the document (and its end token)."""
    if not token_counts:
        return 1.0
    window = ctx_len + 1
    return sum(min(n + 1, window) for n in token_counts) / (len(token_counts) * window)


def propose_loading(token_counts: list[int], ctx_len: int, current: str) -> Proposal | None:
    """pack when padding would fill most of every sample; None when the current loading is fine."""
    fill = padding_fill(token_counts, ctx_len)
    if fill >= PACK_BELOW_FILL or current == "random":  # random windows already read the stream packed
        return None
    return Proposal("data.loading", "pack", f"the samples fill {fill:.0%} of ctx_len {ctx_len:,} on average: "
                                            "pack puts several in one sample instead of padding")


def training_samples(report, ctx_len: int, loading: str) -> int:
    """Samples one pass over the data makes: one per document (pad), or the token stream cut into
    ctx_len windows (pack and random)."""
    if loading == "pad":
        return report.train_documents
    return max(1, (report.train_tokens - 1) // ctx_len)


def propose_epoch_steps(samples: int, passes: int, micro_bsz: int, gpus: int, accumulate: int,
                        loading: str) -> Proposal:
    """samples × passes ÷ (micro_bsz × GPUs × accumulation), at least one step."""
    per_step = micro_bsz * gpus * accumulate
    steps = max(1, math.ceil(samples * passes / per_step))
    unit = "samples" if loading == "pad" else "packed samples"
    return Proposal("epochs.epoch_steps", steps,
                    f"{samples:,} {unit} × {passes} pass(es) ÷ ({micro_bsz} micro_bsz × {gpus} GPU(s) × "
                    f"{accumulate} accumulation) = {steps:,} steps per epoch")


def first_user_turns(texts: Iterable[str], count: int = SAMPLE_PROMPTS) -> list[str]:
    """The first user turn (or instruction) of the first `count` samples that have one; for plain
    text, its first line. These are what the run answers while it trains: a bare question is asked
    as a User turn (trainer/training/samples.py), an instruction keeps its role so that the answer
    comes as a Response."""
    from rwkv_tui.trainer.data.sft import role_spans

    prompts: list[str] = []
    for text in texts:
        turn = next(((role, text[s:e]) for role, s, e in role_spans(text) if role in ("User", "Instruction")),
                    None)
        prompt = (turn[1] if turn is not None else text.split("\n", 1)[0]).strip()
        if len(prompt) > PROMPT_CHARS:
            prompt = prompt[:PROMPT_CHARS].rsplit(" ", 1)[0]
        if turn is not None and turn[0] == "Instruction" and prompt:
            prompt = f"Instruction: {prompt}"
        if prompt and prompt not in prompts:
            prompts.append(prompt)
        if len(prompts) == count:
            break
    return prompts


def propose_from_data(report, config, *, passes: int = 1, gpus: int = 1,
                      fits: Callable[[int], bool] | None = None, where: str = "",
                      prompts: list[str] | None = None) -> list[Proposal]:
    """Every proposal for `config` from the data check `report`: ctx_len, loading, epoch_steps,
    then the sample prompts (when the data has any)."""
    stats = report.token_stats()
    if not stats:
        return []
    ctx = propose_ctx_len(stats["p95"], fits, where)
    proposals = [ctx]
    loading = propose_loading(report.token_counts, ctx.value, config.data.loading)
    if loading is not None:
        proposals.append(loading)
    chosen_loading = loading.value if loading is not None else config.data.loading
    samples = training_samples(report, ctx.value, chosen_loading)
    data, hw = config.data, config.hardware
    proposals.append(propose_epoch_steps(samples, passes, data.micro_bsz, gpus * hw.num_nodes,
                                         data.accumulate_grad_batches, chosen_loading))
    if prompts:
        proposals.append(Proposal("output.sample_prompts", list(prompts),
                                  f"the first user turns of {len(prompts)} samples, answered while it trains"))
    return proposals


def apply_proposals(config, proposals: list[Proposal]) -> None:
    from rwkv_tui.trainer.config import set_field

    for proposal in proposals:
        set_field(config, proposal.field, proposal.value)


def vram_fit_check(state) -> tuple[Callable[[int], bool] | None, str]:
    """Whether a ctx_len fits the smallest picked GPU by the VRAM estimate, and that GPU for the
    reason line; (None, "") on the CPU or before the model is read."""
    from dataclasses import replace

    free, spec = state.free_vram, state.spec
    if free is None or spec is None:
        return None, ""
    from rwkv_tui.trainer.vram import estimate

    config, hw = state.config, state.config.hardware

    def fits(ctx_len: int) -> bool:
        sized = replace(config, data=replace(config.data, ctx_len=ctx_len))
        return estimate(spec, sized, hw.devices * hw.num_nodes).total <= free

    smallest = min(state.selected_gpus(), key=lambda gpu: gpu.free_bytes)
    return fits, f" of GPU {smallest.index} ({free / 1024**3:.1f} GB)"
