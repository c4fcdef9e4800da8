"""What a run trains: the Fabric, the model with its method applied, the optimizer.

The training loop and the GPU benchmark (bench/gpu_trainer.py) both build through here, so
the benchmark measures exactly what a run does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# RunConfig.hardware.precision -> (Fabric precision, dtype the frozen weights are stored in)
PRECISIONS = {
    "bf16": ("bf16-mixed", torch.bfloat16),
    "fp16": ("16-mixed", torch.float16),
    "fp32": ("32-true", torch.float32),
    "tf32": ("32-true", torch.float32),
}


@dataclass
class Training:
    model: Any       # Fabric-wrapped RWKV
    optimizer: Any   # Fabric-wrapped AdamW
    method: Any      # trainer.peft Method
    trainable: int   # parameters the optimizer updates
    total: int       # parameters in the model


# Variables a launcher sets per process, in the order Lightning's own rank_zero_only reads them
# (lightning.fabric.utilities.rank_zero._get_rank): torchrun's RANK, Fabric's LOCAL_RANK, SLURM, LSF.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
# The machine's index: Fabric's launcher on the other nodes starts with LOCAL_RANK unset.
_NODE_VARIABLES = ("NODE_RANK", "GROUP_RANK")
# Fabric's launcher re-runs the whole command for the other local ranks, where a run folder named
# after the time would come out different: rank 0 hands its folder down through the environment.
RUN_DIR_VARIABLE = "RWKV_TUI_RUN_DIR"


def launch_rank_is_zero(environ: dict[str, str] | None = None) -> bool:
    """Whether this process is (or will be) global rank 0, read from the launcher's environment
    variables before any Fabric exists; a process started without a launcher is rank 0."""
    environ = os.environ if environ is None else environ
    rank = next((environ[key] for key in _RANK_VARIABLES if key in environ), "0")
    node = next((environ[key] for key in _NODE_VARIABLES if key in environ), "0")
    return int(rank) == 0 and int(node) == 0


def launched_run_dir(run_dir: str | Path, environ: dict[str, str] | None = None) -> Path:
    """The run folder of this process: `run_dir`, or on a rank Fabric's launcher started, rank 0's."""
    environ = os.environ if environ is None else environ
    if not launch_rank_is_zero(environ) and environ.get(RUN_DIR_VARIABLE):
        return Path(environ[RUN_DIR_VARIABLE])
    return Path(run_dir)


@contextmanager
def _exported(name: str, value: str | None) -> Iterator[None]:
    """`name=value` in this process's environment while the block runs (nothing when value is None)."""
    previous = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def make_fabric(config, run_dir: Path | None = None):
    """A launched Fabric for `config.hardware`, seeded (per rank, so dropout differs across GPUs).
    The ranks the launcher starts inherit `run_dir` (see `launched_run_dir`)."""
    from lightning.fabric import Fabric

    hw = config.hardware
    if hw.precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    accelerator = {"gpu": "cuda"}.get(hw.accelerator, hw.accelerator)
    fabric = Fabric(accelerator=accelerator, devices=hw.devices, num_nodes=hw.num_nodes,
                    strategy=hw.strategy, precision=PRECISIONS[hw.precision][0])
    with _exported(RUN_DIR_VARIABLE, None if run_dir is None else str(run_dir)):
        fabric.launch()  # the launcher copies the environment into the processes it starts
    fabric.seed_everything(config.output.seed + fabric.global_rank, verbose=False)
    return fabric


def build_training(config, state_dict: dict[str, torch.Tensor], spec, fabric,
                   before_optimizer: Callable[[Any, Any], None] | None = None) -> Training:
    """Frozen weights in the compute dtype, trainable ones in fp32 (master weights), the method
    applied on the CPU (PiSSA's SVD, quantization), then Fabric moves everything to the device.
    `before_optimizer(model, method)` runs once the method is applied (warm starts)."""
    from rwkv_tui.trainer.model import model_from_state_dict
    from rwkv_tui.trainer.peft import build_method

    hw, optim = config.hardware, config.optim
    model = model_from_state_dict(state_dict, spec, dtype=PRECISIONS[hw.precision][1])
    model.wkv_op = hw.op
    model.gradient_checkpointing = hw.grad_cp
    method = build_method(config.method, seed=config.output.seed)
    method.apply(model)
    if before_optimizer is not None:
        before_optimizer(model, method)
    opt_params = list(method.optimizer_parameters(model))
    for p in opt_params:
        p.data = p.data.float()
    trainable, total = method.parameter_report(model)
    optimizer = torch.optim.AdamW(param_groups(opt_params, optim.weight_decay), lr=optim.lr_init,
                                  betas=(optim.beta1, optim.beta2), eps=optim.adam_eps)
    model, optimizer = fabric.setup(model, optimizer)
    return Training(model, optimizer, method, trainable, total)


def param_groups(params, weight_decay: float):
    # Decay only matrices, as RWKV-LM does: norms, mixing vectors and states stay undecayed.
    if weight_decay <= 0:
        return [{"params": params, "weight_decay": 0.0}]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def fabric_unwrap(model):
    return getattr(model, "module", model)
