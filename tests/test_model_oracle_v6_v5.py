"""Our RWKV-6 (x060) and RWKV-5 (x052) equal the official `rwkv` package (cpu fp32).

The package detects these versions from the keys when RWKV_V7_ON is off; it keeps their
WKV state key-major, as we do.
"""

from __future__ import annotations

import pytest
import torch

from conftest import write_tiny_checkpoint
from test_model_oracle import T, _rel, _state_for_package, oracle_cases
from rwkv_tui.trainer import load_model

pytest.importorskip("rwkv")

# (version, n_layer, n_embd, vocab, head_size, file dtype). fp32 files only: for a bf16 file
# the package's v5/v6 path folds ln0 into the embedding in bf16 (a 3e-3 rounding of its own).
SHAPES = [
    ("x060", 2, 64, 256, 16, torch.float32),
    ("x060", 3, 128, 65536, 64, torch.float32),
    ("x052", 2, 64, 256, 16, torch.float32),
    ("x052", 3, 128, 1000, 32, torch.float32),
]
@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    directory = tmp_path_factory.mktemp("oracle6")
    checkpoints = []
    for i, (version, n_layer, n_embd, vocab, head_size, dtype) in enumerate(SHAPES):
        path, spec = write_tiny_checkpoint(directory, version=version, n_layer=n_layer, n_embd=n_embd,
                                           vocab_size=vocab, head_size=head_size, dtype=dtype, seed=200 + i,
                                           name=f"m{i}.pth")
        checkpoints.append((path, spec, vocab))
    return oracle_cases(directory, checkpoints, v7=False)


@pytest.mark.parametrize("index", range(len(SHAPES)), ids=[f"{s[0]}-C{s[2]}" for s in SHAPES])
def test_logits_and_states_match_the_official_package(cases, index):
    case = cases[index]
    model = load_model(case["path"])
    assert model.spec.version == SHAPES[index][0]
    tokens = torch.tensor([case["tokens"]])
    with torch.no_grad():
        logits, state = model(tokens)
        from_state, state2 = model(tokens, state=case["start"])
        steps, step_state = [], None
        for t in range(T):
            out, step_state = model(tokens[:, t: t + 1], state=step_state)
            steps.append(out[0, 0])
    official, official2 = case["official"], case["official_from_state"]
    assert _rel(logits[0], official["logits"]) < 1e-4
    assert _rel(logits[0], official["step_logits"]) < 1e-4
    assert _rel(torch.stack(steps), logits[0]) < 1e-5
    assert _rel(from_state[0], official2["logits"]) < 1e-4
    for ours, theirs in zip(_state_for_package(state), official["state"]):
        assert _rel(ours, theirs) < 1e-4
    for ours, theirs in zip(_state_for_package(state2), official2["step_state"]):
        assert _rel(ours, theirs) < 1e-4
    for ours, theirs in zip(_state_for_package(step_state), official["step_state"]):
        assert _rel(ours, theirs) < 1e-4
