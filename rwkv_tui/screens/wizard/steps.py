"""The wizard's steps, listed once: order, title and the screen of each.

Screens are imported when a step is opened, not here, so the app starts without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rwkv_tui.screens.wizard.base import WizardStep
    from rwkv_tui.screens.wizard.state import WizardState


@dataclass(frozen=True)
class WizardStepInfo:
    key: str     # also the name of the module under rwkv_tui.screens.wizard that holds the screen
    title: str   # shown in the step trail
    screen: str  # the screen's class name in that module

    @property
    def module(self) -> str:
        return f"rwkv_tui.screens.wizard.{self.key}"

    def screen_class(self) -> type[WizardStep]:
        return getattr(import_module(self.module), self.screen)


STEPS: tuple[WizardStepInfo, ...] = (
    WizardStepInfo("model", "Model", "ModelScreen"),
    WizardStepInfo("hardware", "Hardware", "HardwareScreen"),
    WizardStepInfo("method", "Method", "MethodScreen"),
    WizardStepInfo("data", "Data", "DataScreen"),
    WizardStepInfo("params", "Parameters", "ParamsScreen"),
    WizardStepInfo("review", "Review", "ReviewScreen"),
)


def step_index(screen_class: type) -> int:
    """Position of the step a screen class (or a subclass of one) implements."""
    for cls in screen_class.__mro__:
        for index, info in enumerate(STEPS):
            if (cls.__module__, cls.__name__) == (info.module, info.screen):
                return index
    raise LookupError(f"{screen_class.__qualname__} is no wizard step")


def step_named(key: str) -> WizardStepInfo:
    for info in STEPS:
        if info.key == key:
            return info
    raise KeyError(f"no wizard step {key!r}; steps: {', '.join(s.key for s in STEPS)}")


def screen_for(key: str, state: WizardState) -> WizardStep:
    return step_named(key).screen_class()(state)
