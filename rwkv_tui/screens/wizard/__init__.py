"""The wizard: Model → Hardware → Method → Data → Parameters → Review, one screen each.

All screens edit one `WizardState` (its `RunConfig` is the single source of truth) and
run anything slow (reading a checkpoint, detecting GPUs, checking data) in thread
workers, importing torch only there, so the UI never blocks and opens fast.
"""

from rwkv_tui.screens.wizard.state import WizardState

STEPS = ("model", "hardware", "method", "data", "params", "review")


def screen_for(step: str, state: WizardState):
    from rwkv_tui.screens.wizard import data, hardware, method, model, params, review

    return {"model": model.ModelScreen, "hardware": hardware.HardwareScreen, "method": method.MethodScreen,
            "data": data.DataScreen, "params": params.ParamsScreen, "review": review.ReviewScreen}[step](state)


__all__ = ["STEPS", "WizardState", "screen_for"]
