"""The UI stays light: no screen, widget or command module imports torch, numpy or lightning
when it is imported; they load only in the workers and commands that need them."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import rwkv_tui

HEAVY = ("torch", "numpy", "lightning")
ENGINE = {"trainer", "kernels", "presets"}


def ui_modules() -> list[str]:
    """Every module of the app (screens, the wizard's steps, widgets, commands), not the engine.

    `__main__` is left out: importing it starts the app."""
    names = [m.name for m in pkgutil.walk_packages(rwkv_tui.__path__, "rwkv_tui.")]
    return [n for n in names if n.split(".")[1] not in ENGINE and n != "rwkv_tui.__main__"]


def test_the_walk_finds_every_wizard_step_and_screen():
    modules = set(ui_modules())
    assert {"rwkv_tui.screens.dashboard", "rwkv_tui.screens.chat", "rwkv_tui.screens.runs",
            "rwkv_tui.widgets.loss_chart", "rwkv_tui.cli"} <= modules
    from rwkv_tui.screens.wizard import STEPS

    assert {step.screen_class().__module__ for step in STEPS} <= modules  # every step the wizard opens


def test_no_ui_module_imports_torch_numpy_or_lightning():
    # Imported one after another in a fresh interpreter: the first module after which a heavy
    # package is loaded is the one that pulled it in (all the modules before it were light).
    code = ("import sys\n"
            f"for module in {ui_modules()!r}:\n"
            "    __import__(module)\n"
            f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "    if heavy:\n"
            "        print(module, 'imports', ','.join(heavy))\n"
            "        break\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""
