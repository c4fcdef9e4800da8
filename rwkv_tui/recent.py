"""Recently used model files, kept in the XDG state folder (`~/.local/state/rwkv-tui`)."""

from __future__ import annotations

import json
from pathlib import Path

from rwkv_tui.trainer.atomic import atomic_write_text
from rwkv_tui.trainer.user_dirs import state_dir  # one state folder for the app and the trainer's run index

MAX_RECENT = 10


def recent_models() -> list[str]:
    try:
        paths = json.loads((state_dir() / "recent-models.json").read_text())
    except (OSError, ValueError):
        return []
    return [p for p in paths if isinstance(p, str) and Path(p).exists()]


def remember_model(path: str) -> None:
    paths = [str(Path(path).resolve())] + [p for p in recent_models() if p != str(Path(path).resolve())]
    try:
        atomic_write_text(state_dir() / "recent-models.json", json.dumps(paths[:MAX_RECENT], indent=1))
    except OSError:
        pass  # a read-only home only costs the list
