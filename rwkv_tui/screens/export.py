"""Merge and export a finished run's output from the dashboard: merged .pth, HF folder, GGUF, Ai00.

The screen holds no engine logic: it builds an `rwkv-tui merge …` or `rwkv-tui export …` command
line, runs it as a subprocess from a thread worker and streams its output into a log and a
progress bar. What can be exported follows from the run folder (config.toml's base model and
method, the outputs its events list) and the method's facts in the torch-free catalogue.
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, RadioButton, RadioSet, RichLog, Select, Static

from rwkv_tui.run_view import RunView
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.peft.catalog import MERGED_FILE, MethodInfo, OutputKind, method_info
from rwkv_tui.trainer.training.folder import RunFolder

# How the app runs its own CLI: the same interpreter, so the venv and the installed package match.
CLI: tuple[str, ...] = (sys.executable, "-m", "rwkv_tui")
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
DEFAULT_OUTTYPE = "f16"
EXPORT_DIR = "export"
# Reverse of ModelSpec.display_name's generation names, for runs whose start event predates its
# `version` field and carries only the display name.
_GENERATIONS = {"RWKV-7": "x070", "RWKV-6": "x060", "RWKV-5": "x052"}
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_COUNT = re.compile(r"\b(\d+)\s*/\s*(\d+)\b")
# Only states and what a run reached at its end are exported; a live run's files still change.
EXPORTABLE_STATES = ("done", "stopped")


@dataclass(frozen=True)
class Target:
    """One thing the screen can write; `reason` says why it is not offered for this run."""

    key: str  # merged | hf | gguf | ai00
    label: str
    available: bool = True
    reason: str = ""


@dataclass(frozen=True)
class RunOutputs:
    """What a finished run produced and which base it used: everything a command line needs."""

    run_dir: Path
    base_model: str
    method: str
    version: str | None  # x070 / x060 / x052, None when the run's events do not say
    newest: str | None  # the newest adapter, model or state .pth the run saved
    merged: str | None  # a merged model of this run that exists (final-merged.pth or one made here)

    @property
    def info(self) -> MethodInfo:
        return method_info(self.method)

    @property
    def name(self) -> str:
        return self.run_dir.name


def version_of(model_name: str) -> str | None:
    """"RWKV-7 0.1B (L12 C768)" -> "x070"; None for a name that does not say."""
    return next((tag for generation, tag in _GENERATIONS.items() if model_name.startswith(generation + " ")), None)


def read_run_outputs(folder: RunFolder, view: RunView) -> RunOutputs:
    """The run's base model and method from config.toml, its outputs from the events already read."""
    from rwkv_tui.trainer.config import load_config

    if not folder.config.is_file():
        raise RwkvTuiError("no config.toml in this run folder, so its base model is unknown", path=folder.path,
                           hint="export the run's files with `rwkv-tui export` / `rwkv-tui merge` by hand")
    config = load_config(folder.config)
    files = [p for p in dict.fromkeys(view.checkpoints + view.outputs) if p.endswith(".pth")]
    trained = [p for p in files if Path(p).name != MERGED_FILE]
    return RunOutputs(run_dir=folder.path, base_model=config.model.path, method=config.method.name,
                      version=view.model_version or version_of(view.model_name), newest=trained[-1] if trained else None,
                      merged=_existing_merged(folder.path, files))


def _existing_merged(run_dir: Path, files: list[str]) -> str | None:
    made_here = default_output(run_dir, "merged")
    candidates = [p for p in files if Path(p).name == MERGED_FILE] + [str(made_here)]
    return next((p for p in candidates if Path(p).is_file()), None)


def default_output(run_dir: Path, key: str, outtype: str = DEFAULT_OUTTYPE, state: bool = False) -> Path:
    """Where each target goes by default: RUN_DIR/export/<run name>…, inside the run folder."""
    stem = run_dir / EXPORT_DIR / run_dir.name
    suffix = {"merged": "-merged.pth", "hf": "-hf", "gguf": f"-{outtype}.gguf",
              "ai00": "-state.st" if state else ".st"}[key]
    return stem.with_name(stem.name + suffix)


def targets_for(run: RunOutputs) -> list[Target]:
    """The four targets, each offered or not with the reason, from the method's and model's facts."""
    if run.newest is None and run.merged is None:
        nothing = "the run saved no .pth output"
        return [Target(k, label, False, nothing) for k, label in _LABELS.items()]
    if run.info.output_kind is OutputKind.STATE:
        return _state_targets(run)
    return [_merged_target(run), *_rwkv7_targets(run), Target("ai00", _LABELS["ai00"])]


_LABELS = {"merged": "Merged model (.pth)", "hf": "Hugging Face folder (fla-hub RWKV7)",
           "gguf": "GGUF (llama.cpp, Ollama, LM Studio)", "ai00": "Ai00 (safetensors)"}


def _merged_target(run: RunOutputs) -> Target:
    label = _LABELS["merged"]
    if not run.info.produces_merged_model:
        return Target("merged", label, False, f"a {run.method} run saves whole models: there is nothing to merge")
    if run.merged is not None:
        return Target("merged", label, False, f"already merged: {run.merged}")
    return Target("merged", label)


def _rwkv7_targets(run: RunOutputs) -> list[Target]:
    """The fla-hub layout and llama.cpp's GGUF tensor names exist for RWKV-7 only."""
    if run.version in (None, "x070"):
        return [Target("hf", _LABELS["hf"]), Target("gguf", _LABELS["gguf"])]
    why = f"Hugging Face and GGUF exports are RWKV-7 formats; this run's model is {run.version}"
    return [Target("hf", _LABELS["hf"], False, why), Target("gguf", _LABELS["gguf"], False, why)]


def _state_targets(run: RunOutputs) -> list[Target]:
    ai00 = Target("ai00", "Ai00 state (safetensors)")
    if run.version == "x070":
        why = ("an RWKV-7 model never reads a merged state; RWKV Runner and Ai00 load the state file "
               "itself next to the base model, so export the state for Ai00")
        return [Target("merged", _LABELS["merged"], False, why), Target("hf", _LABELS["hf"], False, why),
                Target("gguf", _LABELS["gguf"], False, why), ai00]
    formats = f"Hugging Face and GGUF exports are RWKV-7 formats; this run's model is {run.version or 'not RWKV-7'}"
    merged = (Target("merged", _LABELS["merged"]) if run.merged is None else
              Target("merged", _LABELS["merged"], False, f"already merged: {run.merged}"))
    return [merged, Target("hf", _LABELS["hf"], False, formats), Target("gguf", _LABELS["gguf"], False, formats),
            ai00]


def build_argv(run: RunOutputs, key: str, out: str | Path, *, outtype: str = DEFAULT_OUTTYPE,
               force: bool = False, cli: Sequence[str] = CLI) -> list[str]:
    """The command line that writes `key` to `out`: a merge, or an export from the right source."""
    if key == "merged":
        argv = [*cli, "merge", run.base_model, _require(run.newest, run), str(out)]
    else:
        argv = [*cli, "export", *_export_source(run, key), f"--{key}", str(out)]
        if key == "gguf":
            argv += ["--outtype", outtype]
    return argv + (["--force"] if force else [])


def _export_source(run: RunOutputs, key: str) -> list[str]:
    """A merged or whole model as is; an adapter on its base (merged in memory); a state file for Ai00."""
    if run.merged is not None and not (key == "ai00" and run.info.output_kind is OutputKind.STATE):
        return [run.merged]
    newest = _require(run.newest, run)
    if run.info.output_kind is OutputKind.ADAPTER:
        return [run.base_model, "--adapter", newest]
    return [newest]


def _require(path: str | None, run: RunOutputs) -> str:
    if path is None:
        raise RwkvTuiError("the run saved no .pth output to export", path=run.run_dir,
                           hint="train until a checkpoint is saved, then export")
    return path


def parse_progress(line: str) -> float | None:
    """A fraction done from a progress line ("42%", "tensor 3/24"); None for any other line."""
    percent = _PERCENT.search(line)
    if percent:
        return min(float(percent.group(1)) / 100, 1.0)
    count = _COUNT.search(line)
    if count and 0 < int(count.group(2)) and int(count.group(1)) <= int(count.group(2)):
        return int(count.group(1)) / int(count.group(2))
    return None


def stream_lines(stream: IO[bytes]) -> Iterator[str]:
    """The lines of a child's output as they come; a carriage return (progress bars) ends a line too."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while chunk := stream.read1(4096):
        pending += decoder.decode(chunk)
        *lines, pending = re.split(r"\r\n|\r|\n", pending)
        yield from (line for line in lines if line.strip())
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        yield pending


def error_lines(lines: list[str]) -> str:
    """What the CLI printed for its failure: from the last `error:` line on (message and hint)."""
    start = max((i for i, line in enumerate(lines) if line.startswith("error:")), default=None)
    if start is None:
        return "\n".join(lines[-3:]) or "no output"
    return "\n".join(lines[start:])


class ExportScreen(ModalScreen[None]):
    """Choose a target and an output path, run the command, follow its output."""

    BINDINGS = [Binding("escape", "close", "Close / cancel")]

    class Started(Message):
        def __init__(self, process: subprocess.Popen) -> None:
            super().__init__()
            self.process = process

    class OutputLine(Message):
        def __init__(self, line: str) -> None:
            super().__init__()
            self.line = line

    class Finished(Message):
        def __init__(self, returncode: int | None, problem: str = "") -> None:
            super().__init__()
            self.returncode = returncode
            self.problem = problem  # why it never started, when returncode is None

    def __init__(self, run: RunOutputs, *, cli: Sequence[str] | None = None) -> None:
        super().__init__()
        self.run = run
        self.cli = tuple(cli or CLI)
        self.targets = targets_for(run)
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.out: Path | None = None

    def compose(self) -> ComposeResult:
        first = next((t.key for t in self.targets if t.available), None)
        with VerticalScroll(id="export-dialog"):  # scrolls on a small terminal
            yield Static(Text.assemble(("Export ", "bold"), self.run.name), classes="screen-title")
            with RadioSet(id="export-target"):
                for t in self.targets:
                    yield RadioButton(t.label, value=t.key == first, disabled=not t.available, id=f"target-{t.key}")
            yield Static(self._reasons(), id="export-why", classes="help")
            with Horizontal(classes="inline-fields", id="outtype-row"):
                yield Label("GGUF type")
                yield Select([(t, t) for t in OUTTYPES], value=DEFAULT_OUTTYPE, allow_blank=False, id="export-outtype")
            with Horizontal(classes="inline-fields"):
                yield Label("Output")
                yield Input(id="export-out")
            yield Checkbox("Overwrite an existing output (--force)", id="export-force")
            yield ProgressBar(id="export-progress", show_eta=False)
            yield RichLog(id="export-log", max_lines=300, wrap=True, markup=False)
            yield Static(id="export-result")
            with Horizontal(classes="wizard-nav"):
                yield Button("Run", id="export-run", variant="primary", disabled=first is None)
                yield Button("Close", id="export-close")

    def on_mount(self) -> None:
        self.query_one("#export-log").border_title = "output"
        self.query_one("#export-progress", ProgressBar).update(total=1, progress=0)
        self._show_target()

    def _reasons(self) -> Text:
        """Why each target that is not offered is not, one line per reason."""
        by_reason: dict[str, list[str]] = {}
        for t in self.targets:
            if not t.available:
                by_reason.setdefault(t.reason, []).append(t.label.split(" (")[0])
        text = Text()
        for reason, labels in by_reason.items():
            text.append(", ".join(labels) + ": ", style="bold")
            text.append(reason + "\n")
        return text

    @property
    def selected(self) -> str | None:
        button = self.query_one("#export-target", RadioSet).pressed_button
        return button.id.removeprefix("target-") if button is not None and button.id else None

    @property
    def outtype(self) -> str:
        value = self.query_one("#export-outtype", Select).value
        return value if isinstance(value, str) else DEFAULT_OUTTYPE

    def _default_output(self, key: str) -> Path:
        state = self.run.info.output_kind is OutputKind.STATE
        return default_output(self.run.run_dir, key, self.outtype, state=state)

    def _show_target(self) -> None:
        """The output field and the GGUF type follow the chosen target."""
        key = self.selected
        self.query_one("#outtype-row").display = key == "gguf"
        self.query_one("#export-out", Input).value = str(self._default_output(key)) if key else ""

    @on(RadioSet.Changed, "#export-target")
    def _target_changed(self) -> None:
        self._show_target()

    @on(Select.Changed, "#export-outtype")
    def _outtype_changed(self) -> None:
        self._show_target()

    def command(self) -> tuple[list[str], Path]:
        """The command line for the chosen target and the output it writes."""
        key = self.selected
        if key is None:
            raise RwkvTuiError("nothing to export for this run", path=self.run.run_dir,
                               hint="; ".join(t.reason for t in self.targets))
        out = Path(self.query_one("#export-out", Input).value.strip() or self._default_output(key))
        argv = build_argv(self.run, key, out, outtype=self.outtype,
                          force=self.query_one("#export-force", Checkbox).value, cli=self.cli)
        return argv, out

    @on(Button.Pressed, "#export-run")
    def start(self) -> None:
        if self.process is not None:
            return
        try:
            argv, self.out = self.command()
        except RwkvTuiError as exc:
            self._show_result(Text(f"error: {exc}", style="bold red"))
            return
        self.lines = []
        self.query_one("#export-log", RichLog).clear()
        self.query_one("#export-log", RichLog).write(Text("$ " + " ".join(argv[len(self.cli):]), style="dim"))
        self.query_one("#export-progress", ProgressBar).update(total=None, progress=0)  # busy until % lines come
        self._show_result(Text("running…", style="cyan"))
        self._set_running(True)
        self._run_command(argv, self.out)

    def _set_running(self, running: bool) -> None:
        self.query_one("#export-run", Button).disabled = running
        self.query_one("#export-target", RadioSet).disabled = running
        self.query_one("#export-close", Button).label = "Cancel" if running else "Close"

    @work(thread=True, exclusive=True, group="export")
    def _run_command(self, argv: list[str], out: Path) -> None:
        """Run the command and post its output line by line; the only place that waits on it."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            self.post_message(self.Finished(None, f"could not start {argv[0]}: {exc}"))
            return
        self.post_message(self.Started(process))
        for line in stream_lines(process.stdout):
            self.post_message(self.OutputLine(line))
        self.post_message(self.Finished(process.wait()))

    @on(Started)
    def _started(self, message: Started) -> None:
        self.process = message.process

    @on(OutputLine)
    def _output_line(self, message: OutputLine) -> None:
        self.lines.append(message.line)
        style = "red" if message.line.startswith(("error:", "  hint:")) else ""
        self.query_one("#export-log", RichLog).write(Text(message.line, style=style))
        fraction = parse_progress(message.line)
        if fraction is not None:
            self.query_one("#export-progress", ProgressBar).update(total=100, progress=round(fraction * 100))

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        self.process = None
        self._set_running(False)
        bar = self.query_one("#export-progress", ProgressBar)
        if message.returncode == 0:
            bar.update(total=100, progress=100)
            wrote = next((line for line in reversed(self.lines) if line.startswith("wrote ")), f"wrote {self.out}")
            self._show_result(Text(wrote, style="bold green"))
            self._note_merged()
            return
        bar.update(total=1, progress=0)
        if message.returncode is None:
            self._show_result(Text(f"error: {message.problem}", style="bold red"))
        elif message.returncode < 0:
            self._show_result(Text(f"cancelled (signal {-message.returncode}); no output was written",
                                   style="bold yellow"))
        else:
            self._show_result(Text(f"failed (exit {message.returncode}):\n{error_lines(self.lines)}",
                                   style="bold red"))

    def _note_merged(self) -> None:
        """After a merge the later exports start from the merged model, and it is not offered again."""
        if self.selected != "merged" or self.out is None:
            return
        self.run = replace(self.run, merged=str(self.out))
        self.query_one("#target-merged", RadioButton).disabled = True

    def _show_result(self, text: Text) -> None:
        self.query_one("#export-result", Static).update(text)

    @on(Button.Pressed, "#export-close")
    def action_close(self) -> None:
        if self.process is not None:  # the exports write atomically: a stopped one leaves no output
            self.process.terminate()
            return
        self.dismiss()

    def on_unmount(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
