"""What can be done with a run, shared by the dashboard and the Runs screen: which actions apply to
its state, and resume, continue, chat, export and delete themselves, with their two dialogs.

    live (starting, running, stopping)   stop · chat (once a checkpoint exists)
    done                                 continue · chat (once a checkpoint exists) · export · delete
    stopped, failed, crashed             resume · continue · chat · export (stopped) · delete

Resume is `train --resume` exactly (the same launcher); Continue is a new run from the last weights
with a fresh schedule (`trainer.training.continuation`), and its dialog says which file it starts
from and how. Nothing here trains: the trainer runs in its own process, started by `launch`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from rwkv_tui import launch
from rwkv_tui.run_view import RunView
from rwkv_tui.screens.export import EXPORTABLE_STATES
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.folder import LIVE_STATES, RunFolder, read_all_events

ENDED_BADLY = ("stopped", "failed", "crashed")
# The keys of a run's actions, on the Runs screen and the dashboard alike; which show follows from
# the run's state (`applicable`, through each screen's `check_action`).
RUN_ACTION_BINDINGS = [
    Binding("r", "resume", "Resume"),
    Binding("r", "continue", "Continue…"),
    Binding("n", "continue_after_stop", "Continue…"),
    Binding("c", "chat", "Chat"),
    Binding("e", "export", "Export…"),
    Binding("x", "delete", "Delete…"),
]
# The hint line under the progress bar once a run has ended: (key, what it says, action), in order.
_HINTS = (("c", "chat", "chat"), ("e", "export", "export"), ("r", "continue", "continue"),
          ("r", "resume", "resume"), ("n", "continue", "continue_after_stop"))


def applicable(state: str, has_output: bool) -> set[str]:
    """The run actions that apply to a run in `state` (a RunView/status state, or "crashed")."""
    if state in LIVE_STATES:
        return {"stop"} | ({"chat"} if has_output else set())
    actions = {"delete"}
    if state == "done":
        actions |= {"continue"}
    elif state in ENDED_BADLY:
        actions |= {"resume", "continue_after_stop"}
    if state in EXPORTABLE_STATES:  # the export dialog says what this run's files allow, or that it has none
        actions |= {"export"}
    if has_output:
        actions |= {"chat"}
    return actions


def next_steps(state: str, has_output: bool) -> str:
    """The done panel's line, e.g. 'c chat · e export · r continue · q quit'; '' while the run is live.
    (Delete is in the footer only: not a next step to suggest.)"""
    if state in LIVE_STATES or state == "unknown":
        return ""
    can = applicable(state, has_output)
    return " · ".join([f"{key} {what}" for key, what, action in _HINTS if action in can] + ["q quit"])


def replay(folder: RunFolder) -> RunView:
    """The run's view from all its events so far (the Runs screen's facts about one run)."""
    view = RunView()
    for event in read_all_events(folder):
        view.apply(event)
    return view


def saved_outputs(view: RunView) -> list[str]:
    return [p for p in dict.fromkeys(view.checkpoints + view.outputs) if p.endswith(".pth")]


def epoch_count(folder: RunFolder) -> int:
    """The run's epochs.epoch_count: what the Continue dialog proposes (1 when config.toml is unreadable)."""
    from rwkv_tui.trainer.config import load_config

    try:
        return load_config(folder.config).epochs.epoch_count
    except (OSError, RwkvTuiError):
        return 1


def resume_run(folder: RunFolder) -> int:
    """`rwkv-tui train --resume RUN_DIR`, detached like every launch from the app; the trainer's pid."""
    return launch.launch_training(None, folder.path, resume=True)


def start_continuation(folder: RunFolder, epochs: int) -> Path:
    """Launch the continued run (a new folder next to this one); its run folder."""
    from rwkv_tui.trainer.training.continuation import continue_config

    continuation = continue_config(folder.path, epochs)
    launch.launch_training(continuation.config, continuation.run_dir)
    return continuation.run_dir


def delete_run(folder: RunFolder) -> None:
    """The run folder and everything in it, and its line in the run index; never a live run's."""
    from rwkv_tui.trainer.training.run_index import forget_run

    if folder.trainer_pid() is not None:
        raise RwkvTuiError("the run is live: stop it before deleting it", path=folder.path)
    shutil.rmtree(folder.path)
    forget_run(folder.path)


def chat_screen(folder: RunFolder, view: RunView):
    """The chat on the run's newest output (a merged model, an adapter or a state), or None."""
    from rwkv_tui.screens.chat import ChatScreen
    from rwkv_tui.trainer.config import load_config
    from rwkv_tui.trainer.peft.catalog import method_info

    outputs = saved_outputs(view)
    if not outputs:
        return None
    config = load_config(folder.config)
    target = method_info(config.method.name).chat_target(outputs, base_model=config.model.path)
    return ChatScreen(target.model, adapter=target.adapter, state=target.state)


class ContinueDialog(ModalScreen[Path | None]):
    """How many more epochs; says which weights the new run starts from. Dismisses with the new
    run's folder once it is launched, or None."""

    DEFAULT_CSS = """
    ContinueDialog { align: center middle; }
    #continue-dialog { width: 90%; max-width: 100; height: auto; border: round $primary;
                       background: $surface; padding: 0 1; }
    #continue-epochs { width: 12; }
    #continue-row { height: 3; }
    #continue-row Label { padding: 1 1 0 0; }
    #continue-what { height: auto; margin: 1 0; }
    #continue-dialog .wizard-nav { height: 3; align-horizontal: right; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, folder: RunFolder, epochs: int = 1) -> None:
        super().__init__()
        self.folder = folder
        self.epochs = epochs

    def compose(self) -> ComposeResult:
        with Vertical(id="continue-dialog"):
            yield Static(f"Continue {self.folder.path.name}", classes="screen-title")
            with Horizontal(id="continue-row"):
                yield Label("more epochs")
                yield Input(str(self.epochs), id="continue-epochs", type="integer")
            yield Static(id="continue-what")
            with Horizontal(classes="wizard-nav"):
                yield Button("Cancel", id="continue-cancel")
                yield Button("Start", id="continue-start", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#continue-epochs", Input).focus()
        self._describe()

    def _epochs(self) -> int | None:
        try:
            return int(self.query_one("#continue-epochs", Input).value)
        except ValueError:
            return None

    @on(Input.Changed, "#continue-epochs")
    def _describe(self) -> None:
        from rwkv_tui.trainer.training.continuation import continue_config

        what = self.query_one("#continue-what", Static)
        try:
            plan = continue_config(self.folder.path, self._epochs() or 0)
        except RwkvTuiError as exc:
            what.update(f"[red]{exc}[/]")
            self.query_one("#continue-start", Button).disabled = True
            return
        self.query_one("#continue-start", Button).disabled = False
        what.update(f"Starts {plan.describe()}. The old run stays as it is; `train --resume` would instead "
                    "finish its own schedule.")

    @on(Input.Submitted, "#continue-epochs")
    @on(Button.Pressed, "#continue-start")
    def _start(self) -> None:
        epochs = self._epochs()
        if epochs is None or self.query_one("#continue-start", Button).disabled:
            return
        try:
            run_dir = start_continuation(self.folder, epochs)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.dismiss(run_dir)

    @on(Button.Pressed, "#continue-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDelete(ModalScreen[bool]):
    """Delete a run folder? y deletes, n or Esc keeps it."""

    DEFAULT_CSS = """
    ConfirmDelete { align: center middle; }
    #delete-dialog { width: 90%; max-width: 90; height: auto; border: round $error; background: $surface;
                     padding: 0 1; }
    #delete-dialog .wizard-nav { height: 3; align-horizontal: right; }
    """
    BINDINGS = [Binding("y", "confirm", "Delete"), Binding("n,escape", "cancel", "Keep")]

    def __init__(self, folder: RunFolder) -> None:
        super().__init__()
        self.folder = folder

    def compose(self) -> ComposeResult:
        with Vertical(id="delete-dialog"):
            yield Static(f"Delete the run folder {self.folder.path} with its checkpoints and logs?\n"
                         "This cannot be undone.")
            with Horizontal(classes="wizard-nav"):
                yield Button("Keep (n)", id="delete-keep")
                yield Button("Delete (y)", id="delete-confirm", variant="error")

    @on(Button.Pressed, "#delete-confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#delete-keep")
    def action_cancel(self) -> None:
        self.dismiss(False)
