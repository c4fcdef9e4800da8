"""Peak extra RAM while saving a checkpoint: our streaming save against Lightning's fabric.save.

Each save runs in a fresh child process holding `--mb` MB of tensors (in `--tensors` pieces);
the child resets the kernel's peak-RSS mark (/proc/self/clear_refs), saves, and reports
VmHWM minus the RSS before the save. Linux only.

    python -m bench.checkpoint_save --mb 256 --tensors 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

WRITERS = ("atomic_torch_save", "lightning_atomic_save")


@dataclass(frozen=True)
class SavePeak:
    writer: str
    checkpoint_mb: float
    largest_tensor_mb: float
    peak_extra_mb: float  # the most RSS rose above its level before the save


def measure(writer: str, megabytes: int, tensors: int) -> SavePeak:
    """Run one save in a child process (a clean heap, so earlier saves cannot hide the peak)."""
    code = f"from bench.checkpoint_save import _child; _child({writer!r}, {megabytes}, {tensors})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return SavePeak(**json.loads(out.stdout.strip().splitlines()[-1]))


def _child(writer: str, megabytes: int, tensors: int) -> None:
    import torch

    per_tensor = megabytes * 2**20 // tensors // 4
    state = {"model": {f"w{i}": torch.randn(per_tensor) for i in range(tensors)}, "step": 1}
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "checkpoints" / "resume.ckpt"
        target.parent.mkdir()
        before = _reset_peak()
        _save(writer, state, target)
        peak = _status_kb("VmHWM")
    print(json.dumps(asdict(SavePeak(writer=writer, checkpoint_mb=megabytes, largest_tensor_mb=megabytes / tensors,
                                     peak_extra_mb=round((peak - before) / 1024, 1)))))


def _save(writer: str, state: dict, target: Path) -> None:
    if writer == "atomic_torch_save":
        from rwkv_tui.trainer.checkpoint import atomic_torch_save

        atomic_torch_save(state, target)
    else:  # what fabric.save does on one device: torch.save into a BytesIO, then an fsspec transaction
        from lightning.fabric.utilities.cloud_io import _atomic_save

        _atomic_save(state, target)


def _reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    return _status_kb("VmRSS")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="checkpoint size in MB")
    parser.add_argument("--tensors", type=int, default=16, help="how many equal tensors hold it")
    args = parser.parse_args(argv)
    for writer in WRITERS:
        print(json.dumps(asdict(measure(writer, args.mb, args.tensors))))


if __name__ == "__main__":
    main()
