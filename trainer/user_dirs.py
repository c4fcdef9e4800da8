"""Where rwkv-tui keeps per-user state (the run index, recent models): the XDG state folder.

`RWKV_TUI_STATE_DIR` overrides it (the tests point it at a temporary folder); otherwise
platformdirs' `user_state_dir("rwkv-tui")`, which follows `XDG_STATE_HOME` (~/.local/state/rwkv-tui).
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    root = os.environ.get("RWKV_TUI_STATE_DIR")
    if root:
        return Path(root)
    from platformdirs import user_state_dir

    return Path(user_state_dir("rwkv-tui"))
