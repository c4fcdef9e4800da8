"""What the wizard has gathered so far; the RunConfig inside it is what gets saved and run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rwkv_tui.trainer.config import RunConfig

if TYPE_CHECKING:  # for the annotations only: the check module pulls in numpy, the app must open without it
    from rwkv_tui.trainer.data.check import CheckReport
    from rwkv_tui.trainer.hardware import HardwareReport
    from rwkv_tui.trainer.spec import ModelSpec


@dataclass
class WizardState:
    config: RunConfig = field(default_factory=RunConfig)
    spec: ModelSpec | None = None              # once a model is inspected
    hardware: HardwareReport | None = None     # once the GPUs are detected
    gpu_index: int = 0
    check: CheckReport | None = None           # once the .jsonl data is checked

    @property
    def free_vram(self) -> int | None:
        if self.hardware is None or not self.hardware.gpus:
            return None
        gpus = self.hardware.gpus
        return gpus[min(self.gpu_index, len(gpus) - 1)].free_bytes
