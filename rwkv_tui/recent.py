"""Recently used model files, kept in the XDG state folder (`~/.local/state/rwkv-tui`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rwkv_tui.trainer.atomic import atomic_write_text

MAX_RECENT = 10


def state_dir() -> Path:
    root = os.environ.get("RWKV_TUI_STATE_DIR")
    if root:
        return Path(root)
    from platformdirs import user_state_dir

    return Path(user_state_dir("rwkv-tui"))


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
