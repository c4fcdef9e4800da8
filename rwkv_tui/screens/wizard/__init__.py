"""The wizard: Model → Hardware → Method → Data → Parameters → Review, one screen each.

All screens edit one `WizardState` (its `RunConfig` is the single source of truth) and
run anything slow (reading a checkpoint, detecting GPUs, checking data) in thread
workers, importing torch only there, so the UI never blocks and opens fast. Workers
never touch the screen or the state: they post a Message that the screen applies.
The steps themselves are listed once, in `steps.STEPS`.
"""

from rwkv_tui.screens.wizard.state import WizardState
from rwkv_tui.screens.wizard.steps import STEPS, WizardStepInfo, screen_for

__all__ = ["STEPS", "WizardState", "WizardStepInfo", "screen_for"]
