"""Our RWKV-7 equals the official `rwkv` package (0.8.x, cpu fp32) on random checkpoints."""

from __future__ import annotations

import pytest
import torch

from conftest import write_tiny_checkpoint
from rwkv_oracle import run_official
from rwkv_tui.trainer import load_model

pytest.importorskip("rwkv")

# (n_layer, n_embd, vocab, head_size, file dtype): several shapes, small and World vocab.
SHAPES = [
    (2, 64, 256, 16, torch.float32),
    (3, 128, 1000, 32, torch.bfloat16),
    (4, 256, 65536, 64, torch.bfloat16),
    (2, 128, 65536, 64, torch.float32),
]
T = 21  # not a multiple of any chunk size


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _state_for_package(state) -> list[torch.Tensor]:
    """Our per-layer (att_x, wkv, ffn_x) with batch 1 -> the package's flat list."""
    flat = []
    for att_x, wkv, ffn_x in state:
        flat += [att_x[0], wkv[0], ffn_x[0]]
    return flat


def oracle_cases(directory, checkpoints, v7: bool = True) -> list[dict]:
    """For each (path, spec, vocab): random tokens, a start state from a 5-token prefix, and the
    package's results from zero and from that state (one subprocess for all)."""
    out = []
    for i, (path, spec, vocab) in enumerate(checkpoints):
        tokens = torch.randint(0, vocab, (T,), generator=torch.Generator().manual_seed(i)).tolist()
        # A non-trivial starting state: run a prefix through our model, hand it to both sides.
        with torch.no_grad():
            _, start = load_model(path)(torch.tensor([tokens[:5]]))
        state_path = directory / f"state{i}.pt"
        torch.save(_state_for_package(start), state_path)
        out.append({"path": path, "spec": spec, "tokens": tokens, "start": start, "state_path": state_path})
    jobs = []
    for case in out:
        jobs.append({"path": str(case["path"]), "tokens": case["tokens"]})
        jobs.append({"path": str(case["path"]), "tokens": case["tokens"], "state": str(case["state_path"])})
    official = run_official(jobs, directory, v7=v7)
    for i, case in enumerate(out):
        case["official"], case["official_from_state"] = official[2 * i], official[2 * i + 1]
    return out


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    directory = tmp_path_factory.mktemp("oracle")
    checkpoints = []
    for i, (n_layer, n_embd, vocab, head_size, dtype) in enumerate(SHAPES):
        path, spec = write_tiny_checkpoint(directory, n_layer=n_layer, n_embd=n_embd, vocab_size=vocab,
                                           head_size=head_size, dtype=dtype, seed=100 + i, name=f"m{i}.pth",
                                           d_decay=32, d_aaa=32, d_mv=16, d_gate=64)
        checkpoints.append((path, spec, vocab))
    return oracle_cases(directory, checkpoints)


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_logits_and_states_match_the_official_package(cases, index):
    case = cases[index]
    model = load_model(case["path"])
    with torch.no_grad():
        logits, state = model(torch.tensor([case["tokens"]]))
    assert _rel(logits[0], case["official"]["logits"]) < 1e-4
    for ours, theirs in zip(_state_for_package(state), case["official"]["state"]):
        assert _rel(ours, theirs) < 1e-4


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_supplied_state_matches_the_official_package(cases, index):
    case = cases[index]
    model = load_model(case["path"])
    with torch.no_grad():
        logits, state = model(torch.tensor([case["tokens"]]), state=case["start"])
    assert _rel(logits[0], case["official_from_state"]["logits"]) < 1e-4
    assert _rel(logits[0], case["official_from_state"]["step_logits"]) < 1e-4
    for ours, theirs in zip(_state_for_package(state), case["official_from_state"]["step_state"]):
        assert _rel(ours, theirs) < 1e-4


@pytest.mark.parametrize("index", [0, 2])
def test_sequence_equals_token_by_token(cases, index):
    case = cases[index]
    model = load_model(case["path"])
    tokens = torch.tensor([case["tokens"]])
    with torch.no_grad():
        full, full_state = model(tokens)
        state = None
        steps = []
        for t in range(tokens.shape[1]):
            out, state = model(tokens[:, t: t + 1], state=state)
            steps.append(out[0, 0])
    assert _rel(torch.stack(steps), full[0]) < 1e-5
    assert _rel(torch.stack(steps), case["official"]["step_logits"]) < 1e-4
    for (a1, w1, f1), (a2, w2, f2) in zip(state, full_state):
        assert _rel(a1, a2) < 1e-6 and _rel(w1, w2) < 1e-5 and _rel(f1, f2) < 1e-6


def test_split_sequence_with_state_equals_one_call(cases):
    case = cases[1]
    model = load_model(case["path"])
    tokens = torch.tensor([case["tokens"]])
    with torch.no_grad():
        full, _ = model(tokens)
        first, state = model(tokens[:, :8])
        second, _ = model(tokens[:, 8:], state=state)
    assert _rel(torch.cat([first, second], dim=1), full) < 1e-5


def test_batch_rows_are_independent(cases):
    case = cases[0]
    model = load_model(case["path"])
    tokens = torch.tensor([case["tokens"], case["tokens"][::-1]])
    with torch.no_grad():
        both, _ = model(tokens)
        single, _ = model(tokens[1:])
    assert _rel(both[1], single[0]) < 1e-5
