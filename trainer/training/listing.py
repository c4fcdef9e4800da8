"""Find run folders and summarise them (for `rwkv-tui runs`, `attach` and the Runs screen)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.training.folder import LIVE_STATES, RunFolder

# What a user is told about a run's state (`RunSummary.status`): the folder's own states folded
# into the four that decide what can be done with it.
_STATUS_OF_STATE = {"starting": "live", "running": "live", "stopping": "live", "done": "finished",
                    "stopped": "stopped", "failed": "crashed", "crashed": "crashed"}
# Event lines as EventWriter writes them (json.dumps' default separators): only these are parsed.
_SUMMARY_KINDS = tuple(f'"kind": "{kind}"' for kind in ("start", "val", "best"))


@dataclass(frozen=True)
class RunSummary:
    path: Path
    state: str  # starting | running | stopping | done | stopped | failed | crashed | unknown
    step: int | None
    total_steps: int | None
    loss: float | None
    updated: float | None
    error: str | None = None
    method: str | None = None
    model: str | None = None
    val_loss: float | None = None
    best_step: int | None = None

    @property
    def status(self) -> str:
        """live | finished | stopped | crashed | unknown: what the user can do with it follows from this."""
        return _STATUS_OF_STATE.get(self.state, "unknown")


def summarize_run(folder: RunFolder) -> RunSummary:
    status = folder.read_status()
    state = status.get("state", "unknown")
    # A run that says it is alive but whose process is gone died without a word.
    if state in LIVE_STATES and folder.trainer_pid() is None:
        state = "crashed"
    facts = _event_facts(folder)
    return RunSummary(
        path=folder.path,
        state=state,
        step=status.get("step"),
        total_steps=status.get("total_steps"),
        loss=status.get("smoothed_loss", status.get("loss")),
        updated=status.get("updated"),
        error=status.get("error"),
        **facts,
    )


def _event_facts(folder: RunFolder) -> dict:
    """Method and model (from the last `start` event), the last val loss and the best step, read
    from events.jsonl; only the few lines of those kinds are parsed, the step lines are skipped."""
    facts: dict = {}
    try:
        with open(folder.events, "rb") as handle:
            for raw in handle:
                text = raw.decode("utf-8", errors="replace")
                if not any(marker in text for marker in _SUMMARY_KINDS):
                    continue
                try:
                    event = json.loads(text)
                except ValueError:
                    continue
                _fold_fact(facts, event)
    except OSError:
        pass
    return facts


def _fold_fact(facts: dict, event) -> None:
    if not isinstance(event, dict):
        return
    kind = event.get("kind")
    if kind == "start":
        facts["method"] = str(event.get("method", "")) or None
        facts["model"] = str(event.get("model", "")) or None
    elif kind == "val" and isinstance(event.get("loss"), (int, float)):
        facts["val_loss"] = float(event["loss"])
    elif kind == "best" and isinstance(event.get("step"), int):
        facts["best_step"] = event["step"]


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run folder directly under `root` (or `root` itself), newest first."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    runs = [summarize_run(RunFolder.at(p)) for p in candidates if RunFolder.at(p).exists()]
    return _newest_first(runs)


def list_known_runs(root: str | Path | None = None) -> list[RunSummary]:
    """The runs of the run index (every run started anywhere) plus those under `root`, each once,
    newest first. Indexed folders that are gone are dropped quietly."""
    from rwkv_tui.trainer.training.run_index import indexed_runs

    runs = {r.path: r for r in list_runs(root)} if root is not None else {}
    for path in indexed_runs():
        folder = RunFolder.at(path)
        if folder.path not in runs and folder.exists():
            runs[folder.path] = summarize_run(folder)
    return _newest_first(list(runs.values()))


def newest_live_run(runs: list[RunSummary]) -> RunSummary | None:
    return next((r for r in runs if r.status == "live"), None)


def _newest_first(runs: list[RunSummary]) -> list[RunSummary]:
    return sorted(runs, key=lambda r: r.updated or 0.0, reverse=True)
