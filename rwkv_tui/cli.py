"""The `rwkv-tui` entry point: the wizard when run bare, sub-commands otherwise."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from rwkv_tui import __version__
from rwkv_tui import commands as _commands_pkg

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input the user can fix: the message says how


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rwkv-tui",
        description="Fine-tune RWKV language models from the terminal. Run without a command to open the wizard.",
    )
    parser.add_argument("--version", action="version", version=f"rwkv-tui {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(_commands_pkg.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_commands_pkg.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        return _open_wizard(parser)
    return run_handler(handler, args)


def run_handler(handler, args) -> int:
    """Run a command; user-fixable errors become a short message and exit code 2."""
    from rwkv_tui.trainer.errors import RwkvTuiError

    try:
        return int(handler(args) or 0)
    except RwkvTuiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _open_wizard(parser: argparse.ArgumentParser) -> int:
    try:
        app_module = importlib.import_module("rwkv_tui.app")
    except ModuleNotFoundError as exc:
        if exc.name != "rwkv_tui.app":
            raise
        parser.print_help()
        return EXIT_OK
    return int(app_module.run_app() or 0)
