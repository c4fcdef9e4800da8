"""Step 2: the GPUs this machine has (NVML or torch), or an honest CPU-only mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import DataTable, Static

from rwkv_tui.screens.wizard.base import WizardStep

if TYPE_CHECKING:
    from rwkv_tui.trainer.hardware import HardwareReport

GB = 1024**3


@dataclass
class HardwareDetected(Message, bubble=False):
    report: HardwareReport


class HardwareScreen(WizardStep):
    def body(self) -> ComposeResult:
        yield Static("GPUs found on this machine. The method table on the next screen checks what fits in the "
                     "selected GPU's free memory.", classes="help")
        yield DataTable(id="gpus", cursor_type="row")
        yield Static(id="hardware-note")

    def on_mount(self) -> None:
        table = self.query_one("#gpus", DataTable)
        table.add_columns("#", "GPU", "total", "free", "driver", "CUDA", "bf16")
        self.detect()

    @work(thread=True, exclusive=True)
    def detect(self) -> None:
        from rwkv_tui.trainer.hardware import detect_hardware

        self.post_from_worker(HardwareDetected(detect_hardware()))

    def on_hardware_detected(self, message: HardwareDetected) -> None:
        self.state.hardware = message.report
        self._use_accelerator(message.report)
        self._show(message.report)

    def _use_accelerator(self, report: HardwareReport) -> None:
        """One GPU when there is one, else the only settings a CPU trains with."""
        hw = self.state.config.hardware
        if report.has_gpu:
            hw.accelerator, hw.devices = "gpu", 1
        else:
            hw.accelerator, hw.precision, hw.strategy, hw.op = "cpu", "fp32", "auto", "auto"

    def _show(self, report: HardwareReport) -> None:
        table = self.query_one("#gpus", DataTable)
        table.clear()
        for gpu in report.gpus:
            table.add_row(str(gpu.index), gpu.name, f"{gpu.total_bytes / GB:.1f} GB", f"{gpu.free_bytes / GB:.1f} GB",
                          gpu.driver or "–", gpu.cuda or "–", "yes" if gpu.supports_bf16 else "no")
        note = self.query_one("#hardware-note", Static)
        if report.has_gpu:
            note.update(f"{len(report.gpus)} GPU(s) via {report.source}; {report.cpu_count} CPU cores.")
        else:
            note.update("[yellow]No CUDA GPU found.[/yellow] Training will run on the CPU: fine for the demo and "
                        "tiny models, far too slow for real ones. Precision is set to fp32, strategy to auto.")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.state.gpu_index = event.cursor_row

    def can_leave(self) -> bool:
        if self.state.hardware is None:
            self.notify("still detecting GPUs…", severity="warning")
            return False
        return True
