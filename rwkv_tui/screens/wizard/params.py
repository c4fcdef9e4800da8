"""Step 5: the method's parameters with the tutorials' defaults, validated as you type."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Static

from rwkv_tui.screens.wizard.base import WizardStep
from rwkv_tui.trainer.config import coerce_value, field_help, get_field, set_field, validate
from rwkv_tui.trainer.errors import ConfigError

COMMON = ["optim.lr_init", "optim.lr_final", "optim.warmup_steps", "epochs.epoch_steps", "epochs.epoch_count",
          "epochs.epoch_save", "data.loading", "data.loss_mask", "data.accumulate_grad_batches",
          "hardware.precision", "hardware.strategy", "hardware.grad_cp", "output.proj_dir", "output.seed"]
PER_METHOD = {"lora": ["method.r", "method.alpha", "method.dropout", "method.targets"],
              "pissa": ["method.r", "method.svd_niter", "method.targets"],
              "miss": ["method.r", "method.targets"], "lisa": ["method.lisa_r", "method.lisa_k"],
              "state": [], "full": []}


def field_id(dotted: str) -> str:
    return "f-" + dotted.replace(".", "-")


def as_text(value) -> str:
    return ",".join(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else str(value)


class ParamsScreen(WizardStep):
    def body(self) -> ComposeResult:
        yield Static("Defaults follow the RWKV fine-tuning tutorials for this method. Each field explains itself; "
                     "problems show below as you type.", classes="help")
        for dotted in PER_METHOD[self.state.config.method.name] + COMMON:
            with Horizontal(classes="param-row"):
                yield Label(dotted, classes="param-label")
                yield Input(as_text(get_field(self.state.config, dotted)), id=field_id(dotted), tooltip=field_help(dotted))
            yield Static(field_help(dotted), classes="param-help")
        yield Static(id="param-problems")

    def on_mount(self) -> None:
        self.show_problems()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        dotted = event.input.id.removeprefix("f-").replace("-", ".", 1)
        try:
            set_field(self.state.config, dotted, coerce_value(dotted, event.value))
            event.input.remove_class("invalid")
        except ConfigError as exc:
            event.input.add_class("invalid")
            self.query_one("#param-problems", Static).update(f"[red]{dotted}: {exc.message}[/red] — {exc.hint}")
            return
        self.show_problems()

    def problems(self):
        hw = self.state.hardware
        return validate(self.state.config, self.state.spec,
                        cuda_available=hw.has_gpu if hw is not None else None,
                        cuda_devices=len(hw.gpus) if hw is not None else None)

    def show_problems(self) -> None:
        problems = self.problems()
        text = "\n".join(f"[red]{p.field}[/red]: {p.message} — {p.fix}" for p in problems)
        self.query_one("#param-problems", Static).update(text or "[green]no problems[/green]")

    def can_leave(self) -> bool:
        if self.query(".invalid") or self.problems():
            self.notify("fix the problems listed at the bottom first", severity="error")
            return False
        return True
