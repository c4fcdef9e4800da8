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
from textual.widgets import Button, Input, Label, ProgressBar, RichLog, Sparkline, Static
from textual.worker import get_current_worker

from rwkv_tui.screens.wizard.base import WizardStep
from rwkv_tui.trainer.config import MAX_SOURCE_REPEAT, DataSource, is_records_path

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


TRAINED_STYLE = "underline green on #12301a"  # the SFT-masked-in tokens: what the model learns


def preview_text(sample: str, loss_mask: str = "sft") -> Text:
    """The converted text as training sees it: roles in colour, the trained part highlighted
    (with loss_mask=sft the answers, as `sft.token_mask` picks them; else all of it)."""
    from rwkv_tui.trainer.data.sft import ANSWER_ROLES, role_spans

    text = Text()
    spans = role_spans(sample)
    if not spans or loss_mask != "sft":
        return Text(sample[:600], style=TRAINED_STYLE)
    cursor = 0
    for role, start, end in spans:
        label_start = sample.rfind(role + ":", cursor, start)
        text.append(sample[cursor:label_start])
        text.append(sample[label_start:start], style=_ROLE_STYLE.get(role, "bold"))
        text.append(sample[start:end], style=TRAINED_STYLE if role in ANSWER_ROLES else "")
        cursor = end
    return text


def parse_repeat(value: str) -> int | None:
    """A repeat count typed in the field, or None when it is not one."""
    try:
        repeat = int(value.strip() or "1")
    except ValueError:
        return None
    return repeat if 1 <= repeat <= MAX_SOURCE_REPEAT else None


def sources_listing(sources: list[DataSource]) -> str:
    if not sources:
        return ""
    return "training on: " + " · ".join(f"{s.path} ×{s.repeat}" for s in sources)


def mix_prefix(sources: list[DataSource]) -> str:
    """Where the wizard prepares the data: beside the (first) file, named after it."""
    first = Path(sources[0].path).with_suffix("")
    return str(first) if len(sources) == 1 else str(first.with_name(first.name + "-mix"))


def proposals_text(proposals) -> Text:
    """One line per proposal: the setting in bold, its reason dimmed."""
    text = Text("proposed from the data (change them in Parameters; Enter again goes on):", style="bold")
    for proposal in proposals:
        shown = " | ".join(proposal.value) if isinstance(proposal.value, list) else str(proposal.value)
        text.append("\n• ")
        text.append(f"{proposal.field} = {shown}", style="bold")
        text.append(f" — {proposal.reason}", style="dim")
    return text


def sample_prompts(path: str) -> list[str]:
    """The first user turns of a few samples (worker thread: reads only the file's start)."""
    from rwkv_tui.screens.wizard.proposals import first_user_turns
    from rwkv_tui.trainer.data.records import read_samples
    from rwkv_tui.trainer.errors import RwkvTuiError

    try:
        return first_user_turns(s.text for s in read_samples(path) if s.text is not None)
    except (OSError, RwkvTuiError):
        return []


@dataclass
class DataProgress(Message, bubble=False):
    """How far the check or the binidx preparation got."""

    done: int
    total: int


@dataclass
class DataChecked(Message, bubble=False):
    report: CheckReport
    sample: str | None  # the first sample's text (converted to RWKV World text), for the preview
    detected: str | None = None  # the record format the reader found ("OpenAI messages", …)
    prompts: list[str] | None = None  # the first user turns of a few samples: proposed sample prompts


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
    """What a path that is no record file means: a .bin/.idx prefix, or a mistake."""
    if Path(path + ".idx").exists() and Path(path + ".bin").exists():
        return BinidxChosen(path)
    return DataFailed(f"{path}: no .jsonl file, other record file or .bin/.idx pair there")


def parse_passes(value: str) -> int | None:
    """Passes over the data per epoch typed in the field, or None when it is not a count."""
    try:
        passes = int(value.strip() or "1")
    except ValueError:
        return None
    return passes if 1 <= passes <= 1000 else None


class DataScreen(WizardStep):
    MAIN_INPUT = "#data-path"
    _prompts: tuple[str, ...] | list[str] = ()  # the last checked file's first user turns

    def body(self) -> ComposeResult:
        yield Static("A record file (.jsonl, .json, .parquet, .csv, .tsv, .arrow, a datasets folder: text, chat "
                     "messages, ShareGPT, Alpaca…) or a binidx prefix. Enter checks it; Add trains on several "
                     "files, each repeated.", classes="help")
        with Horizontal(classes="inline-fields"):
            path = self.state.config.data.path
            yield Input(value=path if isinstance(path, str) else "", placeholder="/path/to/data.jsonl", id="data-path")
            yield Input(value="1", placeholder="repeat", id="data-repeat", tooltip="copies of this file")
            yield Button("Add", id="add-source")
            yield Button("Prepare binidx", id="prepare")
        yield Static(id="data-sources")
        yield ProgressBar(id="check-progress", show_eta=False)
        yield Static(id="data-summary")
        with Horizontal(classes="inline-fields", id="passes-row"):
            yield Label("passes over the data per epoch")
            yield Input(value="1", id="data-passes", type="integer", tooltip="sets the proposed epoch_steps")
        yield Static(id="data-proposals")
        yield Sparkline([], id="length-histogram")
        yield Static(id="sample-preview")
        yield RichLog(id="data-issues", max_lines=300, wrap=True)

    def on_mount(self) -> None:
        self.query_one("#length-histogram").border_title = "token lengths"
        self.query_one("#check-progress", ProgressBar).update(total=1, progress=0)  # idle, not pulsing
        data = self.state.config.data
        if isinstance(data.path, list):  # a list of paths (a preset): the same files, each once, in the list
            data.sources, data.path = [DataSource(p) for p in data.path] + data.sources, ""
        self._show_sources()
        if data.path:
            self.run_check(data.path)

    def _show_sources(self) -> None:
        self.query_one("#data-sources", Static).update(sources_listing(self.state.config.data.sources))

    @on(Input.Submitted, "#data-path")
    def _submitted(self, event: Input.Submitted) -> None:
        """Enter checks the file; Enter again on the checked file (or a binidx prefix) goes on."""
        path = event.value.strip()
        data, check = self.state.config.data, self.state.check
        checked = check is not None and check.ok and path and Path(check.path) == Path(path)
        if (checked or (path and data.data_type == "binidx" and data.path == path)) and not data.sources:
            self.action_next()
            return
        self.run_check(path)

    def run_check(self, path: str) -> None:
        data = self.state.config.data
        if not data.sources:  # with several files, a checked file joins them by Add
            data.path = path
        self._check_in_thread(path, data.ctx_len, data.micro_bsz)

    @on(Button.Pressed, "#add-source")
    def _add_source(self) -> None:
        """Train on the checked file too, `repeat` times."""
        path = self.query_one("#data-path", Input).value.strip()
        repeat = parse_repeat(self.query_one("#data-repeat", Input).value)
        check = self.state.check
        if repeat is None:
            self.notify(f"repeat must be a whole number from 1 to {MAX_SOURCE_REPEAT:,}", severity="error")
            return
        if check is None or not path or Path(check.path) != Path(path) or not check.ok:
            self.notify("check the file first (Enter in the path field) and fix its errors", severity="warning")
            return
        data = self.state.config.data
        data.sources.append(DataSource(path, repeat))
        data.path, data.data_type = "", "auto"
        self.query_one("#data-path", Input).value = ""
        self.query_one("#data-repeat", Input).value = "1"
        self._show_sources()

    @work(thread=True, exclusive=True, group="data")
    def _check_in_thread(self, path: str, ctx_len: int, micro_bsz: int) -> None:
        from rwkv_tui.trainer.data.check import check_jsonl
        from rwkv_tui.trainer.data.records import detected_format, first_text
        from rwkv_tui.trainer.errors import RwkvTuiError

        if not path:
            self.post_from_worker(DataFailed("data path not set: type the path of a .jsonl (or other record) file"))
            return
        if not is_records_path(path):
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
        self.post_from_worker(DataChecked(report, sample, detected_format(path), sample_prompts(path)))

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
        self._prompts = message.prompts or []
        if message.report.ok:
            self.propose()
        self._show_report(message.report, message.sample, message.detected)

    def propose(self) -> None:
        """Settings from the checked data (see proposals.py), applied and listed with their reasons.
        Sample prompts replace only an empty list or an earlier proposal, never the user's own."""
        from rwkv_tui.screens.wizard.proposals import apply_proposals, propose_from_data, vram_fit_check

        passes = parse_passes(self.query_one("#data-passes", Input).value)
        check, config = self.state.check, self.state.config
        if passes is None or check is None or not check.ok:
            return
        if self.state.keep_data_settings:
            self.query_one("#data-proposals", Static).update(
                Text(f"settings kept: {self.state.keep_data_settings}", style="dim"))
            return
        fits, where = vram_fit_check(self.state)
        proposed_before = {p.field: p.value for p in self.state.proposals}
        if "data.loading" in proposed_before and config.data.loading == proposed_before["data.loading"]:
            config.data.loading = "pad"  # our own earlier proposal (another file): decide afresh
        own_prompts = config.output.sample_prompts and \
            config.output.sample_prompts != proposed_before.get("output.sample_prompts")
        proposals = propose_from_data(check, config, passes=passes, gpus=config.hardware.devices, fits=fits,
                                      where=where, prompts=None if own_prompts else self._prompts)
        apply_proposals(config, proposals)
        check.ctx_len = config.data.ctx_len  # the summary's "over ctx_len" follows the proposal
        self.state.proposals = proposals
        self.query_one("#data-proposals", Static).update(proposals_text(proposals))

    @on(Input.Changed, "#data-passes")
    def _passes_changed(self, event: Input.Changed) -> None:
        if parse_passes(event.value) is None:
            event.input.add_class("invalid")
            return
        event.input.remove_class("invalid")
        if self.state.proposals:
            self.propose()

    def _show_report(self, report: CheckReport, sample: str | None, detected: str | None = None) -> None:
        stats = report.token_stats()
        errors = len(report.errors) + report.suppressed.get("error", 0)
        warnings = len(report.warnings) + report.suppressed.get("warning", 0)
        colour = "red" if errors else ("yellow" if warnings else "green")
        lines = [f"[{colour}]{errors} error(s), {warnings} warning(s)[/{colour}] · {report.samples:,} samples · "
                 + ", ".join(f"{n} {f}" for f, n in sorted(report.formats.items()))
                 + (f" · detected: {detected}" if detected else "")]
        if stats:
            lines.append(f"tokens: median {stats['median']:,}, p95 {stats['p95']:,}, max {stats['max']:,} · "
                         f"{report.over_ctx_len} over ctx_len {report.ctx_len} · {report.duplicates} duplicates · "
                         f"~{report.steps_per_epoch:,} steps per pass")
        self.query_one("#data-summary", Static).update("\n".join(lines))
        self.query_one("#length-histogram", Sparkline).data = histogram(report.token_counts)
        if sample:
            loss_mask = self.state.config.data.loss_mask
            self.query_one("#sample-preview", Static).update(Text.assemble(
                ("preview as trained (learned part highlighted): ", "dim"), preview_text(sample, loss_mask)))
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
        sources = data.all_sources()
        self.prepare([(s.path, s.repeat) for s in sources], mix_prefix(sources), data.ctx_len,
                     sft_mask=data.loss_mask == "sft")

    @work(thread=True, exclusive=True, group="data")
    def prepare(self, sources: list[tuple[str, int]], prefix: str, ctx_len: int, sft_mask: bool) -> None:
        from rwkv_tui.trainer.data.prepare import prepare_binidx
        from rwkv_tui.trainer.errors import RwkvTuiError

        # One file read once is passed as its path: the output is the single-file one, byte for byte.
        source = sources[0][0] if len(sources) == 1 and sources[0][1] == 1 else sources
        try:
            result = prepare_binidx(source, prefix, ctx_len=ctx_len, force=True, sft_mask=sft_mask,
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
        self.state.config.data.sources = []  # they are in the prepared files now
        self.state.config.data.data_type = "binidx"
        self._show_sources()
        self.notify(f"wrote {result.prefix}.bin/.idx ({result.tokens:,} tokens)")

    def can_leave(self) -> bool:
        data = self.state.config.data
        if not data.all_sources():
            self.notify("choose the training data", severity="warning")
            return False
        if data.sources:  # each was checked when added
            return self._typed_path_is_added()
        if self.state.check is not None and not self.state.check.ok:
            self.notify("the data has errors: fix the lines listed below first", severity="error")
            return False
        if self.state.check is None and self.state.config.data.data_type != "binidx":
            self.notify("press Enter in the path field to check the data", severity="warning")
            return False
        return True

    def _typed_path_is_added(self) -> bool:
        """With several files, a path left in the field was probably meant to be added."""
        typed = self.query_one("#data-path", Input).value.strip()
        if typed and all(Path(s.path) != Path(typed) for s in self.state.config.data.sources):
            self.notify(f"press Add to train on {typed} too, or clear the path field", severity="warning")
            return False
        return True
