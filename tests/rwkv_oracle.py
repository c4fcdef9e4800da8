"""Run the official `rwkv` pip package on checkpoints, in a subprocess, for oracle tests.

The package picks its architecture from environment variables at import time
(`RWKV_V7_ON=1` for x070) and flips global torch settings, so it never runs inside the
test process: one subprocess handles a whole batch of jobs and returns plain tensors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch


def run_official(jobs: list[dict], workdir: Path, v7: bool = True) -> list[dict]:
    """Each job: {"path": model.pth, "tokens": [...], "state": optional path of a torch-saved state list}.

    Returns per job: {"logits": [T,V] (sequence mode, all positions), "state": [tensors],
    "step_logits": [T,V] (token by token), "step_state": [tensors]}.
    """
    job_file = workdir / "oracle_jobs.json"
    out_file = workdir / "oracle_out.pt"
    job_file.write_text(json.dumps(jobs))
    env = dict(os.environ, RWKV_V7_ON="1" if v7 else "0", RWKV_CUDA_ON="0", RWKV_JIT_ON="1")
    proc = subprocess.run(
        [sys.executable, __file__, str(job_file), str(out_file)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"official rwkv package failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return torch.load(out_file, weights_only=True)


def _main(job_file: str, out_file: str) -> None:
    from rwkv.model import RWKV

    torch.set_num_threads(2)
    results = []
    for job in json.loads(Path(job_file).read_text()):
        model = RWKV(model=job["path"].removesuffix(".pth"), strategy="cpu fp32")
        start = torch.load(job["state"], weights_only=True) if job.get("state") else None
        tokens = job["tokens"]
        with torch.no_grad():
            state = [t.clone() for t in start] if start is not None else None
            logits, state = model.forward(tokens, state, full_output=True)
            step_state = [t.clone() for t in start] if start is not None else None
            step_logits = []
            for token in tokens:
                out, step_state = model.forward([token], step_state)
                step_logits.append(out.clone())
        results.append({
            "logits": logits.float().clone(),
            "state": [t.float().clone() for t in state],
            "step_logits": torch.stack(step_logits).float(),
            "step_state": [t.float().clone() for t in step_state],
        })
    torch.save(results, out_file)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
