"""ModelSpec: the architecture facts of a checkpoint, inferred from its tensors."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint is. Every field is read from the weights, never typed by a user."""

    version: str
    """Architecture tag as RWKV-LM spells it: "x070" (RWKV-7), "x060", "x052"."""
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    vocab_size: int
    dim_ffn: int
    """Width of the channel-mix hidden layer (4 * n_embd in official models)."""
    d_decay: int = 0
    """Low-rank width of the decay LoRA (RWKV-7 w1/w2, RWKV-6 time_decay_w1/w2); 0 for RWKV-5."""
    d_aaa: int = 0
    """RWKV-7 low-rank width of the in-context learning rate LoRA (a1/a2)."""
    d_mv: int = 0
    """RWKV-7 low-rank width of the value-residual LoRA (v1/v2)."""
    d_gate: int = 0
    """RWKV-7 low-rank width of the output gate (g1/g2)."""
    d_mix: int = 0
    """RWKV-6 low-rank width of each of the five token-shift mixes (time_maa_w1/w2)."""
    dtype: str = "bfloat16"
    """dtype of the stored weights (the majority dtype of the file)."""
    n_params: int = 0
    """Total number of parameters stored in the file."""

    @property
    def display_name(self) -> str:
        generation = {"x070": "RWKV-7", "x060": "RWKV-6", "x052": "RWKV-5"}.get(self.version, self.version)
        return f"{generation} {format_param_count(self.n_params)} (L{self.n_layer} C{self.n_embd})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def format_param_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)
