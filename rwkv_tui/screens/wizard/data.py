"""Step 4: choose and check the training data; preview what the model will learn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, ProgressBar, RichLog, Sparkline, Static
from textual.worker import get_current_worker

from rwkv_tui.screens.wizard.base import WizardStep

if TYPE_CHECKING:
    from rwkv_tui.trainer.data.check import CheckReport
    from rwkv_tui.trainer.data.prepare import PrepareResult

_ROLE_STYLE = {"User": "bold cyan", "System": "bold magenta", "Instruction": "bold cyan", "Input": "bold blue",
               "Assistant": "bold green", "Response": "bold green"}


def histogram(counts: list[int], bins: int = 24) -> list[float]:
    if not counts:
        return []
    top = max(counts) + 1
    hist = [0.0] * bins
    for n in counts:
        hist[min(bins - 1, n * bins // top)] += 1
    return hist


def preview_text(sample: str) -> Text:
    """Roles in colour; the trained (loss-masked-in) answer text underlined."""
    from rwkv_tui.trainer.data.sft import ANSWER_ROLES, role_spans

    text = Text()
    spans = role_spans(sample)
    if not spans:
        return Text(sample[:600], style="underline")
    cursor = 0
    for role, start, end in spans:
        label_start = sample.rfind(role + ":", cursor, start)
        text.append(sample[cursor:label_start])
        text.append(sample[label_start:start], style=_ROLE_STYLE.get(role, "bold"))
        text.append(sample[start:end], style="underline green" if role in ANSWER_ROLES else "")
        cursor = end
    return text


@dataclass
class DataProgress(Message, bubble=False):
    """How far the check or the binidx preparation got."""

    done: int
    total: int


@dataclass
class DataChecked(Message, bubble=False):
    report: CheckReport
    sample: str | None  # the first sample's text, for the preview


@dataclass
class BinidxChosen(Message, bubble=False):
    """The path is the prefix of an already tokenized .bin/.idx pair: nothing to check."""

    path: str


@dataclass
class DataFailed(Message, bubble=False):
    message: str


@dataclass
class PrepareDone(Message, bubble=False):
    result: PrepareResult


@dataclass
class PrepareFailed(Message, bubble=False):
    message: str


def binidx_or_failure(path: str) -> BinidxChosen | DataFailed:
    """What a path without .jsonl means: a .bin/.idx prefix, or a mistake."""
    if Path(path + ".idx").exists() and Path(path + ".bin").exists():
        return BinidxChosen(path)
    return DataFailed(f"{path}: no .jsonl file or .bin/.idx pair there")


class DataScreen(WizardStep):
    def body(self) -> ComposeResult:
        yield Static("A .jsonl with one {\"text\": …} per line (User:/Assistant:, System:, Instruction:/Input:/"
                     "Response: or plain text), or a binidx prefix. Enter checks it line by line.", classes="help")
        with Horizontal(classes="inline-fields"):
            yield Input(value=self.state.config.data.path, placeholder="/path/to/data.jsonl", id="data-path")
            yield Button("Prepare binidx", id="prepare")
        yield ProgressBar(id="check-progress", show_eta=False)
        yield Static(id="data-summary")
        yield Sparkline([], id="length-histogram")
        yield Static(id="sample-preview")
        yield RichLog(id="data-issues", max_lines=300, wrap=True)

    def on_mount(self) -> None:
        self.query_one("#length-histogram").border_title = "token lengths"
        self.query_one("#check-progress", ProgressBar).update(total=1, progress=0)  # idle, not pulsing
        if self.state.config.data.path:
            self.run_check(self.state.config.data.path)

    @on(Input.Submitted, "#data-path")
    def _submitted(self, event: Input.Submitted) -> None:
        self.run_check(event.value.strip())

    def run_check(self, path: str) -> None:
        self.state.config.data.path = path
        self._check_in_thread(path, self.state.config.data.ctx_len, self.state.config.data.micro_bsz)

    @work(thread=True, exclusive=True, group="data")
    def _check_in_thread(self, path: str, ctx_len: int, micro_bsz: int) -> None:
        from rwkv_tui.trainer.data.check import check_jsonl
        from rwkv_tui.trainer.data.records import first_text
        from rwkv_tui.trainer.errors import RwkvTuiError

        if not path.endswith(".jsonl"):
            self.post_from_worker(binidx_or_failure(path))
            return
        worker = get_current_worker()
        try:
            report = check_jsonl(path, ctx_len=ctx_len, micro_bsz=micro_bsz,
                                 progress=lambda done, total: self.post_from_worker(DataProgress(done, total)),
                                 cancel=lambda: worker.is_cancelled)  # a newer check replaced this one
        except RwkvTuiError as exc:
            self.post_from_worker(DataFailed(str(exc)))
            return
        sample = first_text(path)
        self.post_from_worker(DataChecked(report, sample))

    def on_data_progress(self, message: DataProgress) -> None:
        self.query_one("#check-progress", ProgressBar).update(total=message.total, progress=message.done)

    def on_data_failed(self, message: DataFailed) -> None:
        self.state.check = None
        self.query_one("#data-summary", Static).update(f"[red]{message.message}[/red]")

    def on_binidx_chosen(self, message: BinidxChosen) -> None:
        self.state.check = None
        self.state.config.data.data_type = "binidx"
        self.query_one("#data-summary", Static).update(f"binidx dataset {message.path} (already tokenized)")

    def on_data_checked(self, message: DataChecked) -> None:
        self.state.check = message.report
        self.state.config.data.data_type = "auto"
        self._show_report(message.report, message.sample)

    def _show_report(self, report: CheckReport, sample: str | None) -> None:
        stats = report.token_stats()
        errors = len(report.errors) + report.suppressed.get("error", 0)
        warnings = len(report.warnings) + report.suppressed.get("warning", 0)
        colour = "red" if errors else ("yellow" if warnings else "green")
        lines = [f"[{colour}]{errors} error(s), {warnings} warning(s)[/{colour}] · {report.samples:,} samples · "
                 + ", ".join(f"{n} {f}" for f, n in sorted(report.formats.items()))]
        if stats:
            lines.append(f"tokens: median {stats['median']:,}, p95 {stats['p95']:,}, max {stats['max']:,} · "
                         f"{report.over_ctx_len} over ctx_len {report.ctx_len} · {report.duplicates} duplicates · "
                         f"~{report.steps_per_epoch:,} steps per pass")
        self.query_one("#data-summary", Static).update("\n".join(lines))
        self.query_one("#length-histogram", Sparkline).data = histogram(report.token_counts)
        if sample:
            self.query_one("#sample-preview", Static).update(Text.assemble(("preview (trained part underlined): ",
                                                                            "dim"), preview_text(sample)))
        log = self.query_one("#data-issues", RichLog)
        log.clear()
        for issue in report.issues:
            style = "red" if issue.severity == "error" else "yellow"
            where = issue.location() if issue.line else "file"
            log.write(Text.assemble((f"{issue.severity} {where}: ", f"bold {style}"), issue.message,
                                    (f"  {issue.excerpt}" if issue.excerpt else "", "dim"),
                                    (f"  fix: {issue.hint}" if issue.hint else "", "italic")))

    @on(Button.Pressed, "#prepare")
    def _prepare(self) -> None:
        if self.state.check is None or not self.state.check.ok:
            self.notify("check the data first (and fix its errors)", severity="warning")
            return
        data = self.state.config.data
        self.prepare(data.path, data.ctx_len, sft_mask=data.loss_mask == "sft")

    @work(thread=True, exclusive=True, group="data")
    def prepare(self, path: str, ctx_len: int, sft_mask: bool) -> None:
        from rwkv_tui.trainer.data.prepare import prepare_binidx
        from rwkv_tui.trainer.errors import RwkvTuiError

        prefix = path.removesuffix(".jsonl")
        try:
            result = prepare_binidx(path, prefix, ctx_len=ctx_len, force=True, sft_mask=sft_mask,
                                    progress=lambda phase, done, total, tokens: self.post_from_worker(
                                        DataProgress(done, total)))
        except RwkvTuiError as exc:
            self.post_from_worker(PrepareFailed(str(exc)))
            return
        self.post_from_worker(PrepareDone(result))

    def on_prepare_failed(self, message: PrepareFailed) -> None:
        self.notify(message.message, severity="error")

    def on_prepare_done(self, message: PrepareDone) -> None:
        """Train on the prepared files from now on."""
        result = message.result
        self.state.config.data.path = str(result.prefix)
        self.state.config.data.data_type = "binidx"
        self.notify(f"wrote {result.prefix}.bin/.idx ({result.tokens:,} tokens)")

    def can_leave(self) -> bool:
        if not self.state.config.data.path:
            self.notify("choose the training data", severity="warning")
            return False
        if self.state.check is not None and not self.state.check.ok:
            self.notify("the data has errors: fix the lines listed below first", severity="error")
            return False
        if self.state.check is None and self.state.config.data.data_type != "binidx":
            self.notify("press Enter in the path field to check the data", severity="warning")
            return False
        return True
