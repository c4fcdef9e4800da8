"""What each fine-tuning method is, as facts that need no torch: the TUI's screens and the
config checks read them here, and every `Method` class points at its own entry (`Method.info`),
so each fact has one source.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from rwkv_tui.trainer.errors import ConfigError

# The merged model an adapter run leaves when it finishes (training/outputs.py).
MERGED_FILE = "final-merged.pth"


class OutputKind(Enum):
    """What a method saves at each checkpoint."""

    MODEL = "model"      # the whole model under its official names
    ADAPTER = "adapter"  # only the trained tensors + metadata; merged into the base when a run finishes
    STATE = "state"      # {blocks.i.att.time_state: [H, N, N]}, the file RWKV Runner mounts


@dataclass(frozen=True)
class ChatTarget:
    """What the chat loads to talk to a run's output: a model, with an adapter or a state on top."""

    model: str
    adapter: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class MethodInfo:
    name: str
    output_kind: OutputKind
    trains_base_weights: bool

    @property
    def supports_quantization(self) -> bool:
        """int8/nf4 store the frozen base, and a quantized weight cannot be trained."""
        return not self.trains_base_weights

    @property
    def produces_merged_model(self) -> bool:
        """Adapters are merged into the base when a run finishes; models and states are final as saved."""
        return self.output_kind is OutputKind.ADAPTER

    @property
    def output_suffix(self) -> str:
        """-model.pth, -state.pth, or -<method>.pth for an adapter (the file names say the method)."""
        label = self.name if self.output_kind is OutputKind.ADAPTER else self.output_kind.value
        return f"-{label}.pth"

    def output_file(self, tag: str) -> str:
        return f"{tag}{self.output_suffix}"

    def chat_target(self, outputs: list[str], base_model: str) -> ChatTarget:
        """The newest of a run's `outputs` as the chat loads it: a whole or merged model alone,
        an adapter or a state on the run's base model."""
        newest = outputs[-1]
        if self.output_kind is OutputKind.MODEL or Path(newest).name == MERGED_FILE:
            return ChatTarget(newest)
        if self.output_kind is OutputKind.STATE:
            return ChatTarget(base_model, state=newest)
        return ChatTarget(base_model, adapter=newest)


METHOD_INFO: dict[str, MethodInfo] = {info.name: info for info in (
    MethodInfo("full", OutputKind.MODEL, trains_base_weights=True),
    MethodInfo("lora", OutputKind.ADAPTER, trains_base_weights=False),
    MethodInfo("pissa", OutputKind.ADAPTER, trains_base_weights=False),
    MethodInfo("miss", OutputKind.ADAPTER, trains_base_weights=False),
    MethodInfo("lisa", OutputKind.MODEL, trains_base_weights=True),
    MethodInfo("state", OutputKind.STATE, trains_base_weights=False),
)}


def method_info(name: str) -> MethodInfo:
    try:
        return METHOD_INFO[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}", field="method.name",
                          hint=f"choose one of: {', '.join(METHOD_INFO)}") from None
