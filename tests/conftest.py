"""Shared fixtures: tiny random RWKV-7 checkpoints written the way official files are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests are single-threaded and deterministic; the CI machine has 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))
if not torch.cuda.is_available():
    # Triton kernels then run in its CPU interpreter. Triton reads this when it is first
    # imported, so it is set before any test module can import it.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def write_tiny_checkpoint(
    directory: Path,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    vocab_size: int = 256,
    head_size: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    name: str = "tiny.pth",
    version: str = "x070",
    **widths,
) -> tuple[Path, object]:
    """A random RWKV-7 (or `version="x060"`/`"x052"`) `.pth` with non-zero tensors; returns (path, spec)."""
    from rwkv_tui.trainer.checkpoint import save_state_dict
    from rwkv_tui.trainer.model.init import random_state_dict, rwkv5_spec, rwkv6_spec, rwkv7_spec

    if version == "x070":
        for width, value in [("d_decay", 8), ("d_aaa", 8), ("d_mv", 4), ("d_gate", 16)]:
            widths.setdefault(width, value)
        spec = rwkv7_spec(n_layer, n_embd, vocab_size=vocab_size, head_size=head_size, **widths)
    elif version == "x060":
        widths.setdefault("d_mix", 8)
        widths.setdefault("d_decay", 16)
        spec = rwkv6_spec(n_layer, n_embd, vocab_size=vocab_size, head_size=head_size, **widths)
    else:
        spec = rwkv5_spec(n_layer, n_embd, vocab_size=vocab_size, head_size=head_size, **widths)
    state_dict = random_state_dict(spec, seed=seed)
    path = save_state_dict(state_dict, Path(directory) / name, dtype=dtype)
    return path, spec


# The chat every tiny training run learns: short, with User/Assistant turns for the SFT mask.
MATH_CHAT = [f"User: What is {a} plus {b}?\n\nAssistant: {a + b}." for a in range(6) for b in range(4)]


def write_tiny_workspace(directory: Path, texts: list[str] = MATH_CHAT, **checkpoint) -> tuple[Path, Path]:
    """A tiny World-vocab checkpoint and a `{"text": …}` jsonl of `texts` in `directory`: (model, data)."""
    import json

    settings = {"n_layer": 2, "n_embd": 64, "vocab_size": 65536, "head_size": 16, **checkpoint}
    model, _ = write_tiny_checkpoint(directory, **settings)
    data = Path(directory) / "math.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return model, data


def tiny_cpu_config(method: str, model: Path, data: Path, proj_dir: Path, **overrides):
    """A RunConfig for a tiny run on the CPU in fp32, without gradient checkpointing (what the
    trainer tests share); `section__field=value` overrides the rest."""
    from rwkv_tui.trainer.config import RunConfig

    settings = {"model__path": str(model), "data__path": str(data), "output__proj_dir": str(proj_dir),
                "hardware__accelerator": "cpu", "hardware__precision": "fp32", "hardware__grad_cp": False}
    return RunConfig.for_method(method, **{**settings, **overrides})


def run_events(folder, kind: str) -> list[dict]:
    """A run folder's events of one kind, in order."""
    from rwkv_tui.trainer.training.folder import RunFolder, read_all_events

    return [e for e in read_all_events(RunFolder.at(folder)) if e["kind"] == kind]


def step_losses(folder) -> list[float]:
    return [e["loss"] for e in run_events(folder, "step")]


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Presets and recent files go to a temporary home, never the real one."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("RWKV_TUI_STATE_DIR", str(home / "state"))


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return write_tiny_checkpoint(tmp_path)


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    """Let a Textual app run until `condition()` holds (workers and messages are asynchronous)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)
