"""Step 6: the whole RunConfig, the exact headless command (per node on several machines), the
estimated time (and VRAM on a GPU), Save as preset, Start."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Static

from rwkv_tui.screens.wizard.base import WizardStep
from rwkv_tui.trainer.config import config_to_dict, dumps_config, validate

if TYPE_CHECKING:
    from rwkv_tui.screens.wizard.timing import Throughput

MASTER_PORT = 29500  # torch.distributed's usual port; any free one does


def _setting_text(value) -> str:
    if isinstance(value, list):
        # a JSON list when an item holds a comma (prompts): `--set` splits plain text at commas
        return json.dumps(value, ensure_ascii=False) if any("," in v for v in value) else ",".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def gpu_environment(visible_devices: str | None) -> list[str]:
    """The variables the wizard's launch sets (see rwkv_tui.launch.launch_environment)."""
    if visible_devices is None:
        return []
    return [f"CUDA_VISIBLE_DEVICES={visible_devices}", "CUDA_DEVICE_ORDER=PCI_BUS_ID"]


def headless_command(config, visible_devices: str | None = None) -> str:
    """`rwkv-tui train --set …` that runs exactly this config without the UI (on the picked GPUs)."""
    changes = config_to_dict(config, only_changes=True)
    parts = ["rwkv-tui", "train"]
    for section, values in changes.items():
        for name, value in values.items():
            parts += ["--set", f"{section}.{name}={_setting_text(value)}"]
    return " ".join(gpu_environment(visible_devices) + [shlex.quote(p) for p in parts])


def node_commands(config, visible_devices: str | None = None, master_addr: str = "NODE0_ADDRESS",
                  master_port: int = MASTER_PORT) -> list[str]:
    """One command per machine for hardware.num_nodes > 1: Lightning's launcher on each node starts
    its `devices` processes and meets the others at MASTER_ADDR:MASTER_PORT (node 0's address)."""
    command = headless_command(config, visible_devices)
    return [f"MASTER_ADDR={master_addr} MASTER_PORT={master_port} NODE_RANK={rank} {command}"
            for rank in range(config.hardware.num_nodes)]


def commands_text(config, visible_devices: str | None = None) -> Text:
    """The headless command, or one per node; plain text (a path may hold brackets), title in bold."""
    nodes = config.hardware.num_nodes
    if nodes <= 1:
        title, lines = "Headless equivalent", [headless_command(config, visible_devices)]
    else:
        title = (f"Headless equivalent, on each of the {nodes} machines (node 0's address for NODE0_ADDRESS, "
                 "the same paths on every machine)")
        lines = [f"node {rank}: {command}" for rank, command in enumerate(node_commands(config, visible_devices))]
    return Text.assemble((title, "bold"), "\n", "\n".join(lines))


@dataclass
class ThroughputFound(Message, bubble=False):
    throughput: Throughput | None


class ReviewScreen(WizardStep):
    def body(self) -> ComposeResult:
        config = self.state.config
        yield Static("Everything this run will use. Start (Enter) launches the trainer in its own process: you can "
                     "detach or lose SSH and attach again with `rwkv-tui attach`.", classes="help")
        yield Static("time: looking for the throughput of earlier runs…", id="review-time")
        if self.state.spec is not None and self.state.selected_gpus():  # a CPU run has no VRAM to estimate
            from rwkv_tui.trainer.vram import GB, estimate

            hw = config.hardware
            need = estimate(self.state.spec, config, hw.devices * hw.num_nodes).total / GB
            yield Static(f"estimated VRAM per GPU: {need:.1f} GB of {self.state.free_vram / GB:.1f} GB free",
                         id="review-vram")
        yield Static(commands_text(config, self.state.visible_devices), id="review-command")
        with Horizontal(classes="inline-fields"):
            yield Input(placeholder="preset name (Enter saves)", id="preset-name")
            yield Button("Save preset", id="save-preset")
        yield Static(Syntax(dumps_config(config, only_changes=False), "toml", theme="ansi_dark"), id="review-config")

    def on_mount(self) -> None:
        self.find_throughput(self.state.config, bool(self.state.selected_gpus()))

    @work(thread=True, exclusive=True)
    def find_throughput(self, config, on_gpu: bool) -> None:
        from rwkv_tui.screens.wizard.timing import candidate_runs, measured_throughput

        self.post_from_worker(ThroughputFound(measured_throughput(config, candidate_runs(config), on_gpu)))

    def on_throughput_found(self, message: ThroughputFound) -> None:
        from rwkv_tui.screens.wizard.timing import estimate_line

        for line in self.query("#review-time"):  # none once the screen is gone (Back before the answer)
            line.update(estimate_line(self.state.config, message.throughput))

    def next_label(self) -> str:
        return "Start"

    @on(Button.Pressed, "#save-preset")
    @on(Input.Submitted, "#preset-name")
    def _save(self) -> None:
        from rwkv_tui.trainer.errors import RwkvTuiError
        from rwkv_tui.trainer.presets import save_user_preset

        name = self.query_one("#preset-name", Input).value.strip()
        try:
            path = save_user_preset(name, self.state.config, overwrite=True)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"saved {path}")

    def action_next(self) -> None:
        from rwkv_tui.launch import launch_training
        from rwkv_tui.screens.dashboard import DashboardScreen
        from rwkv_tui.trainer.errors import RwkvTuiError

        hw = self.state.hardware
        problems = validate(self.state.config, self.state.spec, cuda_available=hw.has_gpu if hw else None)
        if problems:
            self.notify("\n".join(str(p) for p in problems), severity="error", timeout=10)
            return
        config = self.state.config
        from rwkv_tui.trainer.training.folder import config_run_dir

        run_dir = config_run_dir(config)
        try:
            launch_training(config, run_dir, visible_devices=self.state.visible_devices)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error")
            return
        self.app.push_screen(DashboardScreen(run_dir))
