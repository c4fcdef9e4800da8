"""What the wizard has gathered so far; the RunConfig inside it is what gets saved and run."""

from __future__ import annotations

from dataclasses import dataclass, field

from rwkv_tui.trainer.config import RunConfig


@dataclass
class WizardState:
    config: RunConfig = field(default_factory=RunConfig)
    spec: object | None = None        # trainer.spec.ModelSpec once a model is inspected
    hardware: object | None = None    # trainer.hardware.HardwareReport once detected
    gpu_index: int = 0
    check: object | None = None       # trainer.data.check.CheckReport once the data is checked

    @property
    def free_vram(self) -> int | None:
        gpus = getattr(self.hardware, "gpus", None)
        if not gpus:
            return None
        return gpus[min(self.gpu_index, len(gpus) - 1)].free_bytes
