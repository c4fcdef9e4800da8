"""The live dashboard of one run folder: loss (with the val curve), learning rate, speed, memory,
progress, samples, log; and, once the run has ended, what to do next (resume, continue, chat,
export, delete: `run_actions`), with the footer showing only the keys that apply.

It only reads the run folder (a worker thread tails `events.jsonl`), so it shows a live
run, a finished run and a crashed run the same way, and leaving it never touches the
trainer process. Stop sends SIGINT: the trainer saves a checkpoint and writes `done`. It is
sent only to the process that holds the run folder's lock (see `signal_trainer`): a run whose
pid now belongs to another process is shown as crashed and nothing is signalled.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, RichLog, Sparkline, Static
from textual.worker import get_current_worker

from rwkv_tui.run_view import RunView, downsample, format_duration
from rwkv_tui.screens import run_actions
from rwkv_tui.screens.export import EXPORTABLE_STATES, ExportScreen, read_run_outputs
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.widgets.loss_chart import LossChart, legend
from rwkv_tui.trainer.training.folder import LIVE_STATES, EventReader, RunFolder, signal_trainer

POLL_SECONDS = 0.5
_STATE_STYLES = {"running": "bold black on green", "starting": "bold black on cyan", "done": "bold black on blue",
                 "stopped": "bold black on yellow", "stopping": "bold black on yellow",
                 "failed": "bold white on red", "crashed": "bold white on red"}


_SAMPLE_CHARS = 120  # one sample's text in the panel: the start of the answer is what changes


class DashboardScreen(Screen):
    DEFAULT_CSS = """
    #next-steps { height: auto; padding: 0 1; color: $accent; display: none; }
    #dash-bottom { height: 7; }
    #dash-bottom #run-log { width: 1fr; height: 7; }
    #samples { width: 1fr; height: 7; border: round $primary; padding: 0 1; display: none; overflow-y: auto; }
    """
    # Which show (and work) follows from the run's state: `check_action`, `run_actions.applicable`.
    BINDINGS = [
        Binding("s", "stop", "Stop (saves a checkpoint)"),
        *run_actions.RUN_ACTION_BINDINGS,
        Binding("d", "detach", "Detach"),
        Binding("q", "detach", "Quit", show=False),
    ]
    _RUN_ACTIONS = ("stop", "resume", "continue", "continue_after_stop", "chat", "export", "delete")

    class EventsArrived(Message):
        def __init__(self, events: list[dict], crashed: bool) -> None:
            super().__init__()
            self.events = events
            self.crashed = crashed

    # The command line the export screen runs (None: this interpreter's `-m rwkv_tui`); tests stand one in.
    export_cli: tuple[str, ...] | None = None

    def __init__(self, run_dir: str | Path, *, follow: bool = True) -> None:
        super().__init__()
        self.folder = RunFolder.at(run_dir)
        self.view = RunView()
        self.follow = follow
        self._stop_armed_at: float | None = None
        self._log_shown = 0
        self._bindings_state: tuple[str, bool] = (self.view.state, False)

    def compose(self) -> ComposeResult:
        yield Static(id="run-title")
        with Horizontal(id="dash-top"):
            yield LossChart(id="loss-chart")
            with Vertical(id="dash-stats"):
                yield Static(id="stats")
                yield Sparkline([], id="memory-history")
        yield ProgressBar(id="run-progress", show_eta=False)
        yield Static(id="next-steps")
        with Horizontal(id="dash-bottom"):
            yield RichLog(id="run-log", max_lines=200, wrap=True, markup=False)
            yield Static(id="samples")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LossChart).border_title = legend(with_val=False)
        self.query_one("#stats").border_title = "run"
        self.query_one("#samples").border_title = "samples: step 0 → latest"
        self.query_one("#run-log").border_title = "log"
        self.query_one("#run-progress", ProgressBar).update(total=1, progress=0)
        self._tail_events()

    @work(thread=True, exclusive=True, group="tail")
    def _tail_events(self) -> None:
        """Poll the run folder and post what is new; the only place that touches the files."""
        reader = EventReader(self.folder)
        worker = get_current_worker()
        reported = set()
        while not worker.is_cancelled:
            events = reader.read_new()
            for problem in set(self.folder.status_problems()) - reported:  # each malformed status once
                reported.add(problem)
                events.append({"kind": "warning", "message": problem})
            crashed = self._looks_crashed()
            if events or crashed:
                self.post_message(self.EventsArrived(events, crashed))
            if not self.follow:
                return
            time.sleep(POLL_SECONDS)

    def _looks_crashed(self) -> bool:
        status = self.folder.read_status()  # a malformed status.json reads as empty: not a crash
        return status.get("state") in LIVE_STATES and self.folder.trainer_pid() is None

    @on(EventsArrived)
    def _apply_events(self, message: EventsArrived) -> None:
        for event in message.events:
            self.view.apply(event)
        if message.crashed and self.view.state in LIVE_STATES:
            self.view.state = "crashed"
            self.view.eta_s = None
            self.view.apply({"kind": "error", "message": "the trainer process is gone without finishing",
                             "hint": f"see {self.folder.log} and trainer.out; press r to resume "
                                     f"(`rwkv-tui train --resume {self.folder.path}`)"})
        self.refresh_view()

    def refresh_view(self) -> None:
        v = self.view
        badge = Text(f" {v.state.upper()} ", style=_STATE_STYLES.get(v.state, "bold"))
        title = Text.assemble(badge, " ", (self.folder.path.name, "bold"), "  ", (v.title, "dim"))
        self.query_one("#run-title", Static).update(title)
        chart = self.query_one(LossChart)
        chart.set_points(v.loss, v.smoothed, steps=v.steps, val=v.val)
        chart.placeholder = v.loading or "waiting for the first step…"
        chart.border_title = legend(with_val=bool(v.val))
        self.query_one("#stats", Static).update(self._stats_text())
        memory = self.query_one("#memory-history", Sparkline)
        # The whole run, squeezed to the widget's width: it keeps its history once the run ends.
        memory.data = downsample(v.memory_history, memory.content_size.width or 34)
        memory.border_title = f"{v.memory_label} history"
        hint = run_actions.next_steps(v.state, bool(run_actions.saved_outputs(v)))
        next_steps = self.query_one("#next-steps", Static)
        next_steps.update(hint)
        next_steps.display = bool(hint)
        samples = self.query_one("#samples", Static)
        samples.display = bool(v.samples)
        if v.samples:
            samples.update(self._samples_text())
        progress = self.query_one("#run-progress", ProgressBar)
        progress.update(total=v.total_steps or 1, progress=v.step)
        log = self.query_one("#run-log", RichLog)
        for style, line in v.log[self._log_shown:]:
            log.write(Text(line, style=style))
        self._log_shown = len(v.log)
        keys_state = (v.state, bool(run_actions.saved_outputs(v)))
        if keys_state != self._bindings_state:  # the footer shows only the keys that apply now
            self._bindings_state = keys_state
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop" and self.view.state not in LIVE_STATES:
            return self.folder.trainer_pid() is not None  # the events say ended, yet a trainer holds the folder
        if action in self._RUN_ACTIONS:
            return action in run_actions.applicable(self.view.state, bool(run_actions.saved_outputs(self.view)))
        return True

    def _samples_text(self) -> Text:
        """Per prompt: its first sample (step 0, before any update) and its latest one."""
        text = Text()
        for prompt, entry in self.view.samples.items():
            text.append(f"› {prompt.strip()}\n", style="bold")
            shown = [entry["first"]] + ([entry["latest"]] if entry["latest"] != entry["first"] else [])
            for step, sample in shown:
                text.append(f"  step {step}: ", style="dim" if step == entry["first"][0] else "bold green")
                text.append(" ".join(sample.split())[:_SAMPLE_CHARS] + "\n")
        text.rstrip()
        return text

    def _stats_text(self) -> Text:
        v = self.view
        memory = "–"
        if v.memory_gb is not None:
            memory = f"{v.memory_gb:.2f} GB" + (f" / {v.memory_total_gb:.1f} GB" if v.memory_total_gb else "")
        loss = f"{v.loss[-1]:.4f}" if v.loss else "–"
        smooth = f"{v.smoothed[-1]:.4f}" if v.smoothed else "–"
        rows = [
            ("step", f"{v.step}/{v.total_steps or '?'}  epoch {v.epoch}"),
            ("loss", f"{loss} (avg {smooth})"),
        ]
        if v.val:
            rows.append(("val loss", f"{v.val[-1][1]:.4f} (step {v.val[-1][0]})"))
        if v.best:
            rows.append(("best", f"{v.best[1]:.4f} at step {v.best[0]}"))
        rows += [
            ("lr", f"{v.lr:.3g}" if v.lr is not None else "–"),
            ("tokens/s", f"{v.tokens_per_s:,.0f}" if v.tokens_per_s else "–"),
            ("elapsed", f"{format_duration(v.elapsed_s)}  ETA {format_duration(v.eta_s)}"),
            (v.memory_label, memory),
            ("checkpoints", str(len(v.checkpoints))),
        ]
        for gpu in v.gpus if len(v.gpus) > 1 else []:
            rows.append((f"GPU {gpu['index']}", f"{gpu['used_gb']:.1f} / {gpu['total_gb']:.0f} GB"))
        if v.wkv_op:
            rows.append(("wkv op", v.wkv_op))
        text = Text()
        for i, (label, value) in enumerate(rows):
            text.append(f"{label:<12}", style="bold cyan")
            text.append(value + ("\n" if i < len(rows) - 1 else ""))
        return text

    def action_stop(self) -> None:
        pid = self.folder.trainer_pid()
        if pid is None:
            self.notify("no trainer is running for this run", severity="warning")
            return
        now = time.monotonic()
        if self._stop_armed_at is None or now - self._stop_armed_at > 5:
            self._stop_armed_at = now
            self.notify("press s again to stop: the trainer saves a checkpoint, then exits", timeout=5)
            return
        self._stop_armed_at = None
        if not signal_trainer(self.folder, signal.SIGINT):  # it ended (or lost the lock) meanwhile
            self.notify("the trainer is gone: nothing was signalled", severity="warning")
            return
        self.view.state = "stopping"
        self.view.apply({"kind": "info", "message": "stop requested: saving a checkpoint…"})
        self.refresh_view()

    def action_chat(self) -> None:
        """Open the chat on this run's newest output: a merged model, an adapter or a state."""
        screen = run_actions.chat_screen(self.folder, self.view)
        if screen is None:
            self.notify("no checkpoint yet: chat opens on the run's outputs", severity="warning")
            return
        self.app.push_screen(screen)

    def action_resume(self) -> None:
        """`train --resume` this folder: the same run goes on where its last checkpoint stopped."""
        try:
            run_actions.resume_run(self.folder)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.view.state = "starting"
        self.view.apply({"kind": "info", "message": "resume launched: the trainer continues from the last checkpoint"})
        self.refresh_view()

    def action_continue(self) -> None:
        """A new run from this one's last weights, with a fresh schedule: the dialog says which file."""
        epochs = run_actions.epoch_count(self.folder)

        def opened(run_dir: Path | None) -> None:
            if run_dir is not None:
                self.app.switch_screen(DashboardScreen(run_dir))

        self.app.push_screen(run_actions.ContinueDialog(self.folder, epochs), opened)

    def action_continue_after_stop(self) -> None:
        self.action_continue()

    def action_delete(self) -> None:
        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                run_actions.delete_run(self.folder)
            except (OSError, RwkvTuiError) as exc:
                self.notify(str(exc), severity="error", timeout=10)
                return
            self.workers.cancel_group(self, "tail")
            self.app.notify(f"deleted {self.folder.path}")
            self.app.pop_screen()

        self.app.push_screen(run_actions.ConfirmDelete(self.folder), confirmed)

    def action_export(self) -> None:
        """Merge or export the run's output (merged .pth, HF folder, GGUF, Ai00) in a dialog."""
        if self.view.state not in EXPORTABLE_STATES:
            self.notify("export opens once the run has finished or stopped", severity="warning")
            return
        try:
            run = read_run_outputs(self.folder, self.view)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.app.push_screen(ExportScreen(run, cli=self.export_cli))

    def action_detach(self) -> None:
        # Leaving the UI never touches the trainer: it runs in its own session.
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()
