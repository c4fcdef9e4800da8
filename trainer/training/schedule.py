"""Learning-rate schedules, as a pure function of the optimizer step.

A pure function (rather than a stateful scheduler object) makes resume exact: the step
number alone decides the learning rate, and the dashboard can draw the whole curve ahead.

- warmup: the first `warmup_steps` steps ramp from 1% to 100% of `lr_init` (RWKV-LM's ramp).
- `cos_decay`: cosine from `lr_init` to `lr_final` over the remaining steps.
- `wsd` (warmup-stable-decay): hold `lr_init`, then decay to `lr_final` along a cosine in
  the last `decay_fraction` of the run.
"""

from __future__ import annotations

import math

SCHEDULES = ("cos_decay", "wsd")


def learning_rate(
    step: int,
    total_steps: int,
    lr_init: float,
    lr_final: float,
    warmup_steps: int = 0,
    schedule: str = "cos_decay",
    decay_fraction: float = 0.1,
) -> float:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps:
        return lr_init * (0.01 + 0.99 * step / warmup_steps)
    total_steps = max(total_steps, 1)
    if schedule == "cos_decay":
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
    else:
        decay_start = warmup_steps + (1.0 - decay_fraction) * max(total_steps - warmup_steps, 0)
        span = max(total_steps - decay_start, 1)
        progress = min(max(step - decay_start, 0) / span, 1.0)
    return lr_final + 0.5 * (lr_init - lr_final) * (1.0 + math.cos(math.pi * progress))
