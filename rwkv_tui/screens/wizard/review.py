"""Step 6: the whole RunConfig, the equivalent headless command, Save as preset, Start."""

from __future__ import annotations

import shlex

from rich.syntax import Syntax
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Static

from rwkv_tui.screens.wizard.base import WizardStep
from rwkv_tui.trainer.config import config_to_dict, dumps_config, validate


def headless_command(config) -> str:
    """`rwkv-tui train --set …` that runs exactly this config without the UI."""
    changes = config_to_dict(config, only_changes=True)
    parts = ["rwkv-tui", "train"]
    for section, values in changes.items():
        for name, value in values.items():
            text = ",".join(value) if isinstance(value, list) else (str(value).lower() if isinstance(value, bool)
                                                                    else str(value))
            parts += ["--set", f"{section}.{name}={text}"]
    return " ".join(shlex.quote(p) for p in parts)


class ReviewScreen(WizardStep):
    def body(self) -> ComposeResult:
        config = self.state.config
        yield Static("Everything this run will use. Start launches the trainer in its own process: you can "
                     "detach or lose SSH and attach again with `rwkv-tui attach`.", classes="help")
        yield Static(Syntax(dumps_config(config, only_changes=False), "toml", theme="ansi_dark"), id="review-config")
        yield Static("[b]Headless equivalent[/b]\n" + headless_command(config), id="review-command")
        if self.state.spec is not None:
            from rwkv_tui.trainer.vram import GB, estimate

            yield Static(f"estimated VRAM: {estimate(self.state.spec, config).total / GB:.1f} GB", id="review-vram")
        with Horizontal(classes="inline-fields"):
            yield Input(placeholder="preset name", id="preset-name")
            yield Button("Save preset", id="save-preset")

    def next_label(self) -> str:
        return "Start"

    @on(Button.Pressed, "#save-preset")
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
            launch_training(config, run_dir)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error")
            return
        self.app.push_screen(DashboardScreen(run_dir))
