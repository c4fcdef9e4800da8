"""Find run folders and summarise them (for `rwkv-tui runs` and the wizard's runs list)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.training.folder import RunFolder


@dataclass(frozen=True)
class RunSummary:
    path: Path
    state: str  # starting | running | stopping | done | stopped | failed | crashed | unknown
    step: int | None
    total_steps: int | None
    loss: float | None
    updated: float | None
    error: str | None = None


def summarize_run(folder: RunFolder) -> RunSummary:
    status = folder.read_status()
    state = status.get("state", "unknown")
    # A run that says it is alive but whose process is gone died without a word.
    if state in ("starting", "running", "stopping") and folder.trainer_pid() is None:
        state = "crashed"
    return RunSummary(
        path=folder.path,
        state=state,
        step=status.get("step"),
        total_steps=status.get("total_steps"),
        loss=status.get("smoothed_loss", status.get("loss")),
        updated=status.get("updated"),
        error=status.get("error"),
    )


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run folder directly under `root` (or `root` itself), newest first."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    runs = [summarize_run(RunFolder.at(p)) for p in candidates if RunFolder.at(p).exists()]
    return sorted(runs, key=lambda r: r.updated or 0.0, reverse=True)
