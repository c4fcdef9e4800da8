"""Step 5: the method's parameters with the tutorials' defaults, validated as you type.

A bad field is outlined and its message sits right under it (not below the 18th field); a summary
line at the top counts the problems. Settings proposed from the data say why under the field."""

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
          "data.val_fraction", "data.val_every", "output.trackers", "output.sample_prompts", "output.sample_every",
          "hardware.precision", "hardware.strategy", "hardware.grad_cp", "output.proj_dir", "output.seed"]
PER_METHOD = {"lora": ["method.r", "method.alpha", "method.dropout", "method.targets"],
              "pissa": ["method.r", "method.svd_niter", "method.targets"],
              "miss": ["method.r", "method.targets"], "lisa": ["method.lisa_r", "method.lisa_k"],
              "state": [], "full": []}
# Lists whose items may hold commas (prompts): typed with " | " between the items.
PIPE_LISTS = {"output.sample_prompts"}


def field_id(dotted: str) -> str:
    return "f-" + dotted.replace(".", "-")


def message_id(dotted: str) -> str:
    return "m-" + dotted.replace(".", "-")


def dotted_of(widget_id: str) -> str:
    return widget_id[2:].replace("-", ".", 1)


def as_text(value, dotted: str = "") -> str:
    if isinstance(value, list):
        return (" | " if dotted in PIPE_LISTS else ",").join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_field(dotted: str, text: str):
    """The typed text as the field's value; raises ConfigError naming the field and the fix."""
    if dotted in PIPE_LISTS:
        return coerce_value(dotted, [item.strip() for item in text.split("|") if item.strip()])
    return coerce_value(dotted, text)


class ParamsScreen(WizardStep):
    MAIN_INPUT = ".param-row Input"

    def __init__(self, state) -> None:
        super().__init__(state)
        # Fields whose text is no valid value at all (the config keeps their last good value).
        self._typing_errors: dict[str, str] = {}

    def fields(self) -> list[str]:
        return PER_METHOD[self.state.config.method.name] + COMMON

    def body(self) -> ComposeResult:
        yield Static("Defaults follow the RWKV fine-tuning tutorials for this method; settings proposed from your "
                     "data say why. A bad value is outlined with its problem under it. Enter goes on.",
                     classes="help")
        yield Static(id="param-problems")
        proposed = {p.field: p.reason for p in self.state.proposals}
        for dotted in self.fields():
            with Horizontal(classes="param-row"):
                yield Label(dotted, classes="param-label")
                yield Input(as_text(get_field(self.state.config, dotted), dotted), id=field_id(dotted),
                            tooltip=field_help(dotted))
            error = Static(id=message_id(dotted), classes="param-error")
            error.display = False
            yield error
            if dotted in proposed:
                yield Static(f"proposed from the data: {proposed[dotted]}", classes="param-help param-proposed")
            yield Static(field_help(dotted), classes="param-help")

    def on_mount(self) -> None:
        self.show_problems()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        dotted = dotted_of(event.input.id)
        try:
            set_field(self.state.config, dotted, parse_field(dotted, event.value))
        except ConfigError as exc:
            self._typing_errors[dotted] = f"{exc.message} — {exc.hint}" if exc.hint else exc.message
        else:
            self._typing_errors.pop(dotted, None)
        self.show_problems()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        """Enter in any field: the values are final, on to Review (if nothing is wrong)."""
        self.action_next()

    def problems(self):
        hw = self.state.hardware
        return validate(self.state.config, self.state.spec,
                        cuda_available=hw.has_gpu if hw is not None else None,
                        cuda_devices=len(hw.gpus) if hw is not None else None)

    def field_messages(self) -> tuple[dict[str, str], list[str]]:
        """Messages per shown field, and the lines about fields this step does not show."""
        from rwkv_tui.trainer.training.trackers import require_tracker_packages

        shown = set(self.fields())
        per_field = dict(self._typing_errors)
        elsewhere = []
        try:  # a tracker whose package is missing would stop the run at its start: say so here
            require_tracker_packages(self.state.config)
        except ConfigError as exc:
            per_field.setdefault(exc.field, f"{exc.message} — {exc.hint}")
        for problem in self.problems():
            if problem.field in shown and problem.field not in per_field:
                per_field[problem.field] = f"{problem.message} — {problem.fix}"
            elif problem.field not in shown:
                elsewhere.append(f"[red]{problem.field}[/red]: {problem.message} — {problem.fix}")
        return per_field, elsewhere

    def show_problems(self) -> None:
        from textual.markup import escape

        per_field, elsewhere = self.field_messages()
        # The widgets present (a Changed message may arrive while the screen is being torn down).
        for field in self.query(".param-row Input"):
            message = per_field.get(dotted_of(field.id))
            field.set_class(message is not None, "invalid")
        for error in self.query(".param-error"):
            message = per_field.get(dotted_of(error.id))
            error.display = message is not None
            error.update(f"[red]✗ {escape(message)}[/red]" if message else "")
        count = len(per_field) + len(elsewhere)
        if not count:
            summary = "[green]no problems[/green]"
        else:
            names = ", ".join(per_field)
            summary = f"[red]{count} problem(s)[/red]" + (f" — outlined below: {names}" if names else "")
        for line in self.query("#param-problems"):
            line.update("\n".join([summary, *elsewhere]))

    def can_leave(self) -> bool:
        per_field, elsewhere = self.field_messages()
        if per_field or elsewhere:
            first = next(iter(per_field), None)
            if first is not None:
                self.query_one(f"#{field_id(first)}", Input).focus()
            self.notify("fix the outlined fields first", severity="error")
            return False
        return True
