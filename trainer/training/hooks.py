"""Periodic work inside a run (a validation loss, generated samples), called by the loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rwkv_tui.trainer.training.loop import RunContext


@dataclass
class PeriodicHook:
    """Work done every `every` optimizer steps, such as a validation loss or generated samples.

    It runs on every rank (a validation loss may need a collective), after the step's event and
    before the epoch's checkpoint, and reports through `ctx.log`, which only rank 0 writes. Hooks
    evaluate: they run under torch.no_grad() with the model in eval mode, and the loop puts the
    model back into training mode afterwards."""
    every: int
    run: Callable[[RunContext], None]
    at_start: bool = False  # also before the first step (step 0, or the step a resume starts at)
    at_end: bool = False    # also after the last step (finished or stopped), unless it just ran there

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"PeriodicHook.every must be at least 1, got {self.every}")


class HookSchedule:
    """Calls the hooks when they are due; remembers the step each last ran at, so none runs twice there."""

    def __init__(self, hooks: Sequence[PeriodicHook] = ()) -> None:
        self.hooks = list(hooks)
        self._ran_at: dict[int, int] = {}  # index in self.hooks -> step

    def at_start(self, ctx: RunContext) -> None:
        self._run_due(ctx, lambda hook: hook.at_start)

    def after_step(self, ctx: RunContext) -> None:
        self._run_due(ctx, lambda hook: ctx.step % hook.every == 0)

    def at_end(self, ctx: RunContext) -> None:
        self._run_due(ctx, lambda hook: hook.at_end)

    def _run_due(self, ctx: RunContext, due: Callable[[PeriodicHook], bool]) -> None:
        for index, hook in enumerate(self.hooks):
            if due(hook) and self._ran_at.get(index) != ctx.step:
                _evaluate(hook, ctx)
                self._ran_at[index] = ctx.step


def _evaluate(hook: PeriodicHook, ctx: RunContext) -> None:
    ctx.model.eval()
    try:
        with torch.no_grad():
            hook.run(ctx)
    finally:
        ctx.model.train()
