"""The live dashboard of one run folder: loss, learning rate, speed, memory, progress, log.

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

from rwkv_tui.run_view import RunView, format_duration
from rwkv_tui.screens.export import EXPORTABLE_STATES, ExportScreen, read_run_outputs
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.widgets.loss_chart import LossChart
from rwkv_tui.trainer.training.folder import LIVE_STATES, EventReader, RunFolder, signal_trainer

POLL_SECONDS = 0.5
_STATE_STYLES = {"running": "bold black on green", "starting": "bold black on cyan", "done": "bold black on blue",
                 "stopped": "bold black on yellow", "stopping": "bold black on yellow",
                 "failed": "bold white on red", "crashed": "bold white on red"}


class DashboardScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop (saves a checkpoint)"),
        Binding("d", "detach", "Detach"),
        Binding("c", "chat", "Chat with the result"),
        Binding("e", "export", "Export…"),
        Binding("q", "detach", "Quit", show=False),
    ]

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
        self._bindings_state = self.view.state

    def compose(self) -> ComposeResult:
        yield Static(id="run-title")
        with Horizontal(id="dash-top"):
            yield LossChart(id="loss-chart")
            with Vertical(id="dash-stats"):
                yield Static(id="stats")
                yield Sparkline([], id="memory-history")
        yield ProgressBar(id="run-progress", show_eta=False)
        yield RichLog(id="run-log", max_lines=200, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LossChart).border_title = "loss (grey: raw, green: smoothed)"
        self.query_one("#stats").border_title = "run"
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
                             "hint": f"see {self.folder.log} and trainer.out; resume with "
                                     f"`rwkv-tui train --resume {self.folder.path}`"})
        self.refresh_view()

    def refresh_view(self) -> None:
        v = self.view
        badge = Text(f" {v.state.upper()} ", style=_STATE_STYLES.get(v.state, "bold"))
        title = Text.assemble(badge, " ", (self.folder.path.name, "bold"), "  ", (v.title, "dim"))
        self.query_one("#run-title", Static).update(title)
        self.query_one(LossChart).set_points(v.loss, v.smoothed)
        self.query_one("#stats", Static).update(self._stats_text())
        memory = self.query_one("#memory-history", Sparkline)
        memory.data = v.memory_history[-60:]
        memory.border_title = f"{v.memory_label} history"
        progress = self.query_one("#run-progress", ProgressBar)
        progress.update(total=v.total_steps or 1, progress=v.step)
        log = self.query_one("#run-log", RichLog)
        for style, line in v.log[self._log_shown:]:
            log.write(Text(line, style=style))
        self._log_shown = len(v.log)
        if v.state != self._bindings_state:  # Export shows in the footer only once the run has ended
            self._bindings_state = v.state
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "export":
            return self.view.state in EXPORTABLE_STATES
        return True

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
            ("lr", f"{v.lr:.3g}" if v.lr is not None else "–"),
            ("tokens/s", f"{v.tokens_per_s:,.0f}" if v.tokens_per_s else "–"),
            ("ETA", format_duration(v.eta_s)),
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
        from rwkv_tui.screens.chat import ChatScreen
        from rwkv_tui.trainer.config import load_config
        from rwkv_tui.trainer.peft.catalog import method_info

        outputs = [p for p in self.view.checkpoints if p.endswith(".pth")]
        if not outputs:
            self.notify("no checkpoint yet: chat opens on the run's outputs", severity="warning")
            return
        config = load_config(self.folder.config)
        target = method_info(config.method.name).chat_target(outputs, base_model=config.model.path)
        self.app.push_screen(ChatScreen(target.model, adapter=target.adapter, state=target.state))

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
