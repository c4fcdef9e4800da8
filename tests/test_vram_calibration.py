"""The VRAM estimator against real peaks: every row a GPU run of bench/gpu_trainer.py measured
(committed under bench/results/) must be predicted within ±10% by the current estimator.

Until such a run is committed there is nothing to hold the estimator to, and the test says so."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `bench` is not an installed package

from bench import gpu_trainer  # noqa: E402
from rwkv_tui.trainer.vram import GB, estimate  # noqa: E402

TOLERANCE = 0.10


def measured_rows() -> list[dict]:
    rows = []
    for path in sorted((ROOT / "bench" / "results").glob("gpu_trainer-*.json")):
        data = json.loads(path.read_text())
        for row in data["rows"]:
            if row.get("status") == "ok" and row.get("peak_device_gb"):
                rows.append({**row, "file": path.name})
    return rows


ROWS = measured_rows()


@pytest.mark.skipif(not ROWS, reason="no GPU measurements committed yet: run bench/gpu_trainer.py on a GPU")
@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['model']}-{r['method']}-bsz{r['bsz']}-ctx{r['ctx']}")
def test_estimate_within_ten_percent_of_measured_peak(row):
    args = gpu_trainer.parse_args(["--lora-r", str(row.get("lora_r") or 64), "--precision", row["precision"]])
    config = gpu_trainer.make_config(row["method"], row["ctx"], row["bsz"], args)
    predicted = estimate(gpu_trainer.model_spec(row["model"], smoke=False), config).total / GB
    error = predicted / row["peak_device_gb"] - 1
    assert abs(error) <= TOLERANCE, (f"{row['file']}: estimate {predicted:.2f} GB, measured "
                                     f"{row['peak_device_gb']:.2f} GB ({error:+.0%})")
