"""The rwkv-tui engine: checkpoints, models, data, fine-tuning methods, training runs.

Installed as `rwkv_tui.trainer`. Importing it is cheap (no torch); the public functions import
what they need.

    import torch
    import rwkv_tui.trainer as trainer
    model = trainer.load_model("RWKV-x070-World-0.4B.pth", device="cpu", dtype=torch.float32)
    print(model.spec)
    tok = trainer.tokenizer()
    logits, state = model(torch.tensor([tok.encode("Hello world")]))
"""

from __future__ import annotations

from rwkv_tui import refuse_bare_import

refuse_bare_import(__name__)

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from rwkv_tui.trainer.model import RWKV
    from rwkv_tui.trainer.training.loop import RunResult
    from rwkv_tui.trainer.world_tokenizer import WorldTokenizer

__all__ = ["load_model", "tokenizer", "inspect_checkpoint", "run"]


def load_model(path, device="cpu", dtype: "torch.dtype | None" = None) -> "RWKV":
    """Load an official RWKV `.pth` into a trainable model with `.spec` (fp32 by default)."""
    import torch

    from rwkv_tui.trainer.model import load_model as _load_model

    return _load_model(path, device=device, dtype=dtype or torch.float32)


def tokenizer() -> "WorldTokenizer":
    """The RWKV World tokenizer (`encode(str) -> list[int]`, `decode(list[int]) -> str`)."""
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    return get_tokenizer()


def inspect_checkpoint(path):
    """The `ModelSpec` of a checkpoint file, read from its tensors."""
    from rwkv_tui.trainer.checkpoint import inspect_checkpoint as _inspect

    return _inspect(path)


def run(config, run_dir, **kwargs) -> "RunResult":
    """Train as `config` (a `trainer.config.RunConfig`) says, writing the run folder `run_dir`."""
    from rwkv_tui.trainer.training.loop import run as _run

    return _run(config, run_dir, **kwargs)
