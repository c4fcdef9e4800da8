"""Epoch numbers: the one place they are computed from a step count."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochPosition:
    """Where a step stands among the epochs, numbered as events and file names show them."""
    number: int        # the epoch the step belongs to: 1-based, offset by epoch_begin (step events)
    completed: int     # the last epoch the step has finished, offset by epoch_begin (checkpoint events)
    ends_epoch: bool   # the step is the last of its epoch (epoch event, maybe a checkpoint)
    save_due: bool     # ... and epoch_save asks for a checkpoint there


def epoch_of(step: int, epochs) -> EpochPosition:
    """`step` counts optimizer steps done; `epochs` is the config's EpochConfig. `number` and
    `completed` differ only inside an epoch (a checkpoint at a stop names the last finished one)."""
    done, into = divmod(step, epochs.epoch_steps)
    ends_epoch = step > 0 and into == 0
    return EpochPosition(number=epochs.epoch_begin + done + int(into > 0), completed=epochs.epoch_begin + done,
                         ends_epoch=ends_epoch, save_due=ends_epoch and done % epochs.epoch_save == 0)
