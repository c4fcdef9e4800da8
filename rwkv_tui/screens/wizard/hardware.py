"""Step 2: the GPUs this machine has (NVML or torch), which of them to train on, or an honest CPU-only mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Static

from rwkv_tui.screens.wizard.base import WizardStep

if TYPE_CHECKING:
    from rwkv_tui.trainer.hardware import HardwareReport

GB = 1024**3
MULTI_GPU_STRATEGY = "deepspeed_stage_1"  # the tutorials' choice for fine-tuning on several GPUs


@dataclass
class HardwareDetected(Message, bubble=False):
    report: HardwareReport


def apply_gpu_choice(state) -> str:
    """Set hardware.devices (and the strategy) from the picked GPUs; returns the line saying why."""
    hw = state.config.hardware
    gpus = state.selected_gpus()
    if not gpus:
        hw.accelerator, hw.devices, hw.precision, hw.strategy, hw.op = "cpu", 1, "fp32", "auto", "auto"
        return ""
    hw.accelerator, hw.devices = "gpu", len(gpus)
    if len(gpus) > 1 and hw.strategy == "auto":
        hw.strategy = MULTI_GPU_STRATEGY
    elif len(gpus) == 1 and hw.strategy == MULTI_GPU_STRATEGY:
        hw.strategy = "auto"  # only undo our own proposal, never a strategy the user typed
    names = ", ".join(str(g.index) for g in gpus)
    smallest = min(gpus, key=lambda g: g.free_bytes)
    line = (f"training on GPU {names} (CUDA_VISIBLE_DEVICES={state.visible_devices}); the fit check uses the "
            f"smallest free memory, {smallest.free_bytes / GB:.1f} GB on GPU {smallest.index}.")
    if len(gpus) > 1:
        import importlib.util

        line += f"\nstrategy {hw.strategy}: {len(gpus)} GPUs"
        if hw.strategy == MULTI_GPU_STRATEGY:
            line += " share the optimizer states (DeepSpeed stage 1, as the tutorials recommend)"
            if importlib.util.find_spec("deepspeed") is None:
                line += " — [yellow]needs DeepSpeed: pip install deepspeed[/yellow] (or strategy ddp)"
    return line


class HardwareScreen(WizardStep):
    MAIN_INPUT = "#gpus"
    BINDINGS = [Binding("space", "toggle_gpu", "Use GPU / not")]

    def body(self) -> ComposeResult:
        yield Static("GPUs found on this machine. Space picks the GPUs to train on (one or several), Enter goes on. "
                     "The method table on the next screen checks what fits in the smallest picked GPU's free "
                     "memory.", classes="help")
        yield DataTable(id="gpus", cursor_type="row")
        yield Static(id="hardware-note")

    def on_mount(self) -> None:
        table = self.query_one("#gpus", DataTable)
        table.add_columns("use", "#", "GPU", "total", "free", "driver", "CUDA", "bf16")
        self.detect()

    @work(thread=True, exclusive=True)
    def detect(self) -> None:
        from rwkv_tui.trainer.hardware import detect_hardware

        self.post_from_worker(HardwareDetected(detect_hardware()))

    def on_hardware_detected(self, message: HardwareDetected) -> None:
        report = message.report
        self.state.hardware = report
        known = {gpu.index for gpu in report.gpus}
        # First visit: as many GPUs as the config (a preset) asks for, the first ones.
        wanted = max(1, self.state.config.hardware.devices)
        self.state.gpu_indices = ([i for i in self.state.gpu_indices if i in known]
                                  or [gpu.index for gpu in report.gpus[:wanted]])
        self._show()

    def _show(self) -> None:
        report = self.state.hardware
        reason = apply_gpu_choice(self.state)
        table = self.query_one("#gpus", DataTable)
        row = table.cursor_row
        table.clear()
        for gpu in report.gpus:
            table.add_row("●" if gpu.index in self.state.gpu_indices else "○", str(gpu.index), gpu.name,
                          f"{gpu.total_bytes / GB:.1f} GB", f"{gpu.free_bytes / GB:.1f} GB", gpu.driver or "–",
                          gpu.cuda or "–", "yes" if gpu.supports_bf16 else "no")
        if report.gpus:
            table.move_cursor(row=min(row, len(report.gpus) - 1))
        note = self.query_one("#hardware-note", Static)
        if report.has_gpu:
            note.update(f"{len(report.gpus)} GPU(s) via {report.source}; {report.cpu_count} CPU cores.\n{reason}")
        else:
            note.update("[yellow]No CUDA GPU found.[/yellow] Training will run on the CPU: fine for the demo and "
                        "tiny models, far too slow for real ones. Precision is set to fp32, strategy to auto.")
            if self.focused is table:
                self.query_one("#next").focus()  # nothing to pick: Enter goes on

    def action_toggle_gpu(self) -> None:
        """Space on a row: use that GPU too, or not (one always stays picked)."""
        report = self.state.hardware
        if report is None or not report.gpus:
            return
        index = report.gpus[self.query_one("#gpus", DataTable).cursor_row].index
        picked = self.state.gpu_indices
        if index in picked and len(picked) > 1:
            picked.remove(index)
        elif index not in picked:
            picked.append(index)
            picked.sort()
        self._show()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on the table: the picked GPUs are final, on to the method."""
        event.stop()
        self.action_next()

    def can_leave(self) -> bool:
        if self.state.hardware is None:
            self.notify("still detecting GPUs…", severity="warning")
            return False
        return True
