"""Validation during training: val at step 0 equals `rwkv-tui eval`, the schedule, keep_best, trackers."""

from __future__ import annotations

import json
import math

import pytest

from conftest import MATH_CHAT, run_events, tiny_cpu_config, write_tiny_workspace
from rwkv_tui.cli import main
from rwkv_tui.trainer.config import RunConfig, validate
from rwkv_tui.trainer.data.split import split_documents
from rwkv_tui.trainer.training.loop import run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    directory = tmp_path_factory.mktemp("val")
    model, data = write_tiny_workspace(directory)
    return directory, model, data


def make_config(workspace, method: str = "lora", steps: int = 4, **extra) -> RunConfig:
    directory, model, data = workspace
    # ctx_len 16 is shorter than the documents with their end token: windows carry the state
    settings = {"data__ctx_len": 16, "data__micro_bsz": 2, "data__val_fraction": 0.25, "data__val_every": 2,
                "epochs__epoch_steps": steps, "optim__lr_init": 1e-2, "optim__lr_final": 1e-2}
    return tiny_cpu_config(method, model, data, directory / "runs", **{**settings, **extra})


def eval_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *args, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object
    return json.loads(out)


@pytest.mark.slow
def test_val_at_step_zero_equals_eval_and_keep_best_saves_the_best(workspace, tmp_path, capsys):
    config = make_config(workspace, output__keep_best=True)
    result = run(config, tmp_path / "run")
    assert result.reason == "finished"
    vals = run_events(tmp_path / "run", "val")
    # step 0, every val_every steps, and the end (already validated at step 4: not twice)
    assert [e["step"] for e in vals] == [0, 2, 4]
    for e in vals:
        assert e["tokens"] > 0 and e["ppl"] == pytest.approx(math.exp(e["loss"])) and e["seconds"] >= 0
    assert vals[-1]["loss"] < vals[0]["loss"]  # lr 1e-2 on a tiny model learns the sums quickly

    # The same held-out documents, written out and scored by `rwkv-tui eval` with the run's ctx_len and mask.
    held_out = list(split_documents(config.data, config.output.seed).val_texts())
    assert len(held_out) == round(len(MATH_CHAT) * 0.25)
    val_file = tmp_path / "held_out.jsonl"
    val_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in held_out))
    base = eval_json(capsys, config.model.path, str(val_file), "--ctx-len", "16", "--mask", "sft")
    assert base["tokens"] == vals[0]["tokens"] and base["documents"] == len(held_out)
    assert base["loss"] == pytest.approx(vals[0]["loss"], rel=1e-6)

    bests = run_events(tmp_path / "run", "best")
    losses = [e["loss"] for e in vals]
    assert [b["step"] for b in bests] == [e["step"] for i, e in enumerate(vals) if e["loss"] < min(losses[:i] + [9e9])]
    best_file = tmp_path / "run" / "checkpoints" / "best-lora.pth"
    assert bests[-1]["file"] == str(best_file) and best_file.is_file()
    # best-lora.pth is an adapter like any other: eval with it gives the loss it was kept for.
    tuned = eval_json(capsys, config.model.path, str(val_file), "--adapter", str(best_file), "--ctx-len", "16",
                      "--mask", "sft")
    assert tuned["loss"] == pytest.approx(bests[-1]["loss"], rel=1e-4)


@pytest.mark.slow
def test_val_path_and_tracker(workspace, tmp_path, monkeypatch):
    directory, _, _ = workspace
    val_file = tmp_path / "val.jsonl"
    val_file.write_text(json.dumps({"text": "User: What is 9 plus 9?\n\nAssistant: 18."}) + "\n")
    logged = []

    class FakeTracker:
        def log(self, data, step):
            logged.append((step, data))

        def close(self, finished=True):
            pass

        finish = close

    from rwkv_tui.trainer.training import loop

    original = loop._setup

    def with_tracker(*args, **kwargs):
        ctx = original(*args, **kwargs)
        ctx.tracker = FakeTracker()
        return ctx

    monkeypatch.setattr(loop, "_setup", with_tracker)
    config = make_config(workspace, steps=3, data__val_fraction=0.0, data__val_path=str(val_file),
                         data__val_every=5, data__loss_mask="none")
    run(config, tmp_path / "run")
    vals = run_events(tmp_path / "run", "val")
    assert [e["step"] for e in vals] == [0, 3]  # at the start and the end; val_every is past the run
    assert vals[0]["documents"] == 1
    assert [(step, data["val/loss"]) for step, data in logged if "val/loss" in data] == \
        [(e["step"], e["loss"]) for e in vals]
    assert not run_events(tmp_path / "run", "best")  # keep_best is off


def test_no_validation_without_val_data(workspace, tmp_path):
    run(make_config(workspace, steps=1, data__val_fraction=0.0), tmp_path / "run")
    assert not run_events(tmp_path / "run", "val")


def test_val_every_must_be_positive(workspace):
    config = make_config(workspace, data__val_every=0)
    assert any(p.field == "data.val_every" for p in validate(config))


def test_val_max_tokens_caps_the_documents_in_file_order():
    from rwkv_tui.trainer.training.validation import within_budget

    texts = [f"Document number {i} says {'hello ' * (i + 1)}" for i in range(600)]  # more than one tokenize batch
    everything = within_budget(iter(texts), "none", 0)
    assert len(everything) == 600
    sizes = [len(d.tokens) for d in everything]
    budget = sum(sizes[:300]) + 1
    capped = within_budget(iter(texts), "none", budget)
    assert [d.tokens.tolist() for d in capped] == [d.tokens.tolist() for d in everything[:300]]
    [first] = within_budget(iter(texts), "none", 1)  # one document at least, however small the budget
    assert first.tokens.tolist() == everything[0].tokens.tolist()


def test_val_max_tokens_must_not_be_negative(workspace):
    assert any(p.field == "data.val_max_tokens" for p in validate(make_config(workspace, data__val_max_tokens=-1)))
