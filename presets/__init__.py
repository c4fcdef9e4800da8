"""Built-in presets: TOML files next to this module, one per common recipe from the tutorials."""

from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent
