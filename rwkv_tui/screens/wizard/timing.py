"""How long a run will take, from the throughput an earlier run measured on this machine.

A run's step events carry tokens_per_s. An earlier run with the same model, method, quantization,
ctx_len, micro_bsz, precision, gradient checkpointing and kind of device (CPU or GPU) trains at the
same speed per device; the estimate scales it by the number of GPUs (an upper bound: communication
is not free). Without such a run there is no estimate, rather than an invented one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

RUNS_SCANNED = 50  # newest run folders looked at: enough history, bounded work on the Review screen
# What makes two runs train at the same speed per device.
SAME_SPEED = ("model.path", "method.name", "method.quant", "data.ctx_len", "data.micro_bsz",
              "hardware.precision", "hardware.grad_cp")


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: float  # of the whole run (every device)
    source: str          # the run folder it was measured in


def run_tokens(config) -> int:
    """Tokens the run trains on: steps × samples per step (every device) × ctx_len."""
    data, hw, epochs = config.data, config.hardware, config.epochs
    per_step = data.micro_bsz * data.accumulate_grad_batches * hw.devices * hw.num_nodes
    return epochs.epoch_steps * epochs.epoch_count * per_step * data.ctx_len


def _world(config) -> int:
    return config.hardware.devices * config.hardware.num_nodes if config.hardware.accelerator != "cpu" else 1


def _measured(run_dir: Path) -> tuple[float, str] | None:
    """(the last tokens_per_s a step event reported, the start event's device) of one run folder."""
    from rwkv_tui.trainer.training.folder import RunFolder, read_all_events

    speed, device = None, ""
    for event in read_all_events(RunFolder.at(run_dir)):
        if event.get("kind") == "start":
            device = str(event.get("device", ""))
        elif event.get("kind") == "step" and isinstance(event.get("tokens_per_s"), (int, float)):
            speed = float(event["tokens_per_s"])
    return (speed, device) if speed else None


def measured_throughput(config, run_dirs: Iterable[Path], on_gpu: bool) -> Throughput | None:
    """The newest matching run's speed, scaled to this config's number of devices."""
    from rwkv_tui.trainer.config import get_field, load_config
    from rwkv_tui.trainer.errors import RwkvTuiError

    wanted = [get_field(config, name) for name in SAME_SPEED]
    for run_dir in list(run_dirs)[:RUNS_SCANNED]:
        config_file = run_dir / "config.toml"
        if not config_file.is_file():
            continue
        try:
            earlier = load_config(config_file)
        except (RwkvTuiError, OSError, ValueError):
            continue
        if [get_field(earlier, name) for name in SAME_SPEED] != wanted:
            continue
        measured = _measured(run_dir)
        if measured is None or measured[1].startswith("cuda") != on_gpu:
            continue
        speed, _ = measured
        return Throughput(speed / _world(earlier) * _world(config), str(run_dir))
    return None


def candidate_runs(config) -> list[Path]:
    """Run folders to learn from: the run index (any root), then the config's own runs root."""
    from rwkv_tui.trainer.training.run_index import indexed_runs

    runs = list(indexed_runs())
    root = Path(config.output.proj_dir)
    if root.is_dir():
        local = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        runs += [p for p in local if p.resolve() not in {r.resolve() for r in runs}]
    return runs


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_line(config, throughput: Throughput | None) -> str:
    tokens = run_tokens(config)
    if throughput is None:
        return (f"time: {tokens:,} tokens; no estimate yet (no earlier run of this model, method and size on "
                f"this kind of device): the dashboard measures tokens/s, and the next Review uses it")
    seconds = tokens / throughput.tokens_per_s
    return (f"time: ≈ {duration_text(seconds)} for {tokens:,} tokens at {throughput.tokens_per_s:,.0f} tokens/s, "
            f"measured in {throughput.source}")
