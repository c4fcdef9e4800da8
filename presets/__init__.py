"""Built-in presets: TOML files next to this module, one per common recipe from the tutorials."""

from rwkv_tui import refuse_bare_import

refuse_bare_import(__name__)

from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent
