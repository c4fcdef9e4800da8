"""The validation loss during a run, and best-<method>.pth by it.

When data.val_path or data.val_fraction is set, the held-out documents (`split_documents`: the
very documents training leaves out) are scored with the run's loss mask and ctx_len by
`trainer.evaluation`, the core of `rwkv-tui eval`, so val at step 0 equals `eval` of the base
model on the same documents. It runs as a `PeriodicHook`: before the first step, every
data.val_every steps and at the end, and writes

    {"kind": "val", "step": N, "loss": x, "tokens": n, "ppl": x, "documents": n, "seconds": s}

to events.jsonl and the tracker. With output.keep_best the run's weights are saved as
checkpoints/best-<method>.pth (the method's output format) whenever the val loss improves, with a
`{"kind": "best", "step", "loss", "file"}` event.

Several processes: each rank scores its share of the documents and the sums are all-reduced, so
every rank holds the same number. Under DeepSpeed ZeRO-3, whose forward pass is itself a
collective, every rank scores every document instead (the ranks must call forward together).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from rwkv_tui.trainer.evaluation import Document, documents_from_texts, score_documents, total_score
from rwkv_tui.trainer.training.hooks import PeriodicHook

if TYPE_CHECKING:
    from rwkv_tui.trainer.training.loop import RunContext

BEST_TAG = "best"
TOKENIZE_BATCH = 256  # validation texts tokenized at once


def validation_hooks(ctx: RunContext) -> list[PeriodicHook]:
    """The run's validation hook, or none when the config sets no validation data."""
    data = ctx.config.data
    if not (data.val_path or data.val_fraction > 0):
        return []
    validation = Validation(ctx, held_out_documents(ctx.config))
    return [PeriodicHook(every=data.val_every, run=validation, at_start=True, at_end=True)]


def held_out_documents(config) -> list[Document]:
    """The validation documents of the config, tokenized and masked as training would: whole
    documents in file order, up to data.val_max_tokens tokens (at least one document)."""
    from rwkv_tui.trainer.data.split import split_documents
    from rwkv_tui.trainer.errors import DataError

    data = config.data
    documents = within_budget(split_documents(data, config.output.seed).val_texts(), data.loss_mask,
                              data.val_max_tokens)
    if not documents:
        raise DataError("the validation data holds no documents", path=data.val_path or None,
                        field="data.val_path" if data.val_path else "data.val_fraction",
                        hint="give a validation file with records, or raise data.val_fraction")
    return documents


def within_budget(texts: Iterable[str], mask: str, max_tokens: int) -> list[Document]:
    """The first documents of `texts` whose tokens fit `max_tokens` (0: all), tokenized a batch at
    a time, so a large validation file is read no further than needed."""
    documents: list[Document] = []
    used = 0
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) < TOKENIZE_BATCH:
            continue
        used = _take(documents, documents_from_texts(batch, mask), used, max_tokens)
        batch = []
        if max_tokens and used >= max_tokens:
            return documents
    _take(documents, documents_from_texts(batch, mask), used, max_tokens)
    return documents


def _take(documents: list[Document], new: list[Document], used: int, max_tokens: int) -> int:
    """Append the documents of `new` that fit the budget (the first one always); the tokens used."""
    for document in new:
        if max_tokens and documents and used + len(document.tokens) > max_tokens:
            return max(used, max_tokens)  # full: later (shorter) documents are not picked instead
        documents.append(document)
        used += len(document.tokens)
    return used


class Validation:
    """Scores the held-out documents on call (a `PeriodicHook.run`), remembering the best loss."""

    def __init__(self, ctx: RunContext, documents: list[Document]) -> None:
        self.documents = documents
        self.mine = _share(documents, ctx.fabric, ctx.config.hardware.strategy)
        self.best_loss = _earlier_best(ctx)
        ctx.log.log(f"validation: {len(documents):,} documents, {sum(d.targets for d in documents):,} scored "
                    f"tokens (data.val_max_tokens={ctx.config.data.val_max_tokens}), every "
                    f"{ctx.config.data.val_every} steps")

    def __call__(self, ctx: RunContext) -> None:
        started = time.perf_counter()
        data = ctx.config.data
        # At most a training micro batch's tokens per forward: validation never needs more memory than a step.
        sums = score_documents(ctx.model, self.mine, data.ctx_len, device=ctx.fabric.device,
                               batch_tokens=data.micro_bsz * data.ctx_len)
        score = total_score(self.mine, sums)
        if self.mine is not self.documents:
            score = _all_ranks(ctx.fabric, score)
        fields = {"step": ctx.step, "loss": score.loss, "tokens": score.tokens, "ppl": score.ppl,
                  "documents": score.documents, "seconds": round(time.perf_counter() - started, 4)}
        ctx.log.emit("val", **fields)
        if ctx.tracker is not None:
            ctx.tracker.log({"val/loss": score.loss, "val/ppl": score.ppl}, step=ctx.step)
        if ctx.config.output.keep_best and math.isfinite(score.loss) and score.loss < self.best_loss:
            self.best_loss = score.loss
            _save_best(ctx, score.loss)


def _share(documents: list[Document], fabric, strategy: str) -> list[Document]:
    """This rank's documents: every other one by length, so each rank gets a similar amount of work."""
    if fabric.world_size == 1 or strategy.startswith("deepspeed_stage_3"):
        return documents
    by_length = sorted(documents, key=lambda d: -len(d.tokens))
    return by_length[fabric.global_rank::fabric.world_size]


def _all_ranks(fabric, score):
    from rwkv_tui.trainer.evaluation import Score

    totals = torch.tensor([score.loss_sum, score.tokens, score.documents], dtype=torch.float64,
                          device=fabric.device)
    loss_sum, tokens, documents = fabric.all_reduce(totals, reduce_op="sum").tolist()
    return Score(loss_sum, int(tokens), int(documents))


def _save_best(ctx: RunContext, loss: float) -> None:
    """The weights as best-<method>.pth, in the method's output format, written atomically (rank 0)."""
    from rwkv_tui.trainer.training.outputs import save_method_output

    if not ctx.is_global_zero:
        return
    [path] = save_method_output(ctx.model, ctx.method, ctx.spec, ctx.config, ctx.folder.checkpoints, BEST_TAG)
    ctx.log.emit("best", step=ctx.step, loss=loss, file=str(path))


def _earlier_best(ctx: RunContext) -> float:
    """On resume: the best val loss before, if its file is still there; a new run: inf. (A resume
    validates again at the step it starts from: the same weights, the same loss.)"""
    from pathlib import Path

    from rwkv_tui.trainer.training.folder import read_all_events

    if ctx.step == 0 or not ctx.folder.events.exists():
        return math.inf
    return min((e["loss"] for e in read_all_events(ctx.folder)
                if e.get("kind") == "best" and isinstance(e.get("loss"), (int, float))
                and isinstance(e.get("file"), str) and Path(e["file"]).is_file()), default=math.inf)
