"""What the wizard has gathered so far; the RunConfig inside it is what gets saved and run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rwkv_tui.screens.wizard.proposals import Proposal
from rwkv_tui.trainer.config import RunConfig

if TYPE_CHECKING:  # for the annotations only: the check module pulls in numpy, the app must open without it
    from rwkv_tui.trainer.data.check import CheckReport
    from rwkv_tui.trainer.hardware import GpuInfo, HardwareReport
    from rwkv_tui.trainer.spec import ModelSpec


@dataclass
class WizardState:
    config: RunConfig = field(default_factory=RunConfig)
    spec: ModelSpec | None = None              # once a model is inspected
    hardware: HardwareReport | None = None     # once the GPUs are detected
    gpu_indices: list[int] = field(default_factory=list)  # GPUs picked in the Hardware step (empty: the first)
    check: CheckReport | None = None           # once the record data is checked
    proposals: list[Proposal] = field(default_factory=list)  # settings proposed from the checked data
    # Why the data settings stay as they are (the demo's are sized to teach its facts); empty: propose them.
    keep_data_settings: str = ""

    def selected_gpus(self) -> list[GpuInfo]:
        """The GPUs the run will use: those picked, else the first one; none on a CPU-only machine."""
        if self.hardware is None or not self.hardware.gpus:
            return []
        picked = [gpu for gpu in self.hardware.gpus if gpu.index in self.gpu_indices]
        return picked or self.hardware.gpus[:1]

    @property
    def free_vram(self) -> int | None:
        """Free memory of the smallest picked GPU: every rank holds the same model, so it sets the fit."""
        gpus = self.selected_gpus()
        return min(gpu.free_bytes for gpu in gpus) if gpus else None

    @property
    def visible_devices(self) -> str | None:
        """CUDA_VISIBLE_DEVICES for the launch ("1,3"), or None when the GPUs are not known."""
        gpus = self.selected_gpus()
        return ",".join(str(gpu.index) for gpu in gpus) if gpus else None
