"""Samples while training (trainer/training/samples.py): prompts, greedy decoding with the carried
state, the hook's schedule and weights, the training RNG left alone, and the multi-rank rules."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_cpu_config, write_tiny_checkpoint, write_tiny_workspace
from rwkv_tui.trainer.config import RunConfig, validate
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.training import samples
from rwkv_tui.trainer.training.folder import RunFolder, read_all_events
from rwkv_tui.trainer.training.loop import run
from rwkv_tui.trainer.training.samples import Samples, greedy_answer, sample_hooks, sample_prompt
from rwkv_tui.trainer.world_tokenizer import get_tokenizer


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return write_tiny_workspace(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def base_model(workspace):
    from rwkv_tui.trainer.generate import load_for_chat

    return load_for_chat(workspace[0]).eval()


@pytest.fixture
def few_tokens(monkeypatch):
    """Answers of 6 tokens at most: a random tiny model never says the blank line itself."""
    monkeypatch.setattr(samples, "SAMPLE_TOKENS", 6)


def make_config(workspace, method: str = "lora", steps: int = 4, **extra) -> RunConfig:
    model, data = workspace
    return tiny_cpu_config(method, model, data, model.parent / "runs", data__ctx_len=32, data__micro_bsz=2,
                           epochs__epoch_steps=steps, epochs__epoch_count=1, optim__warmup_steps=0, **extra)


def test_a_bare_prompt_is_asked_as_a_chat_turn_and_roles_get_their_answer_role():
    assert sample_prompt("What is 2 plus 3?") == "User: What is 2 plus 3?\n\nAssistant:"
    assert sample_prompt("  Say hi \n") == "User: Say hi\n\nAssistant:"
    assert sample_prompt("User: hi") == "User: hi\n\nAssistant:"
    assert sample_prompt("System: be brief\n\nUser: hi") == "System: be brief\n\nUser: hi\n\nAssistant:"
    assert sample_prompt("Instruction: add\n\nInput: 2, 3") == "Instruction: add\n\nInput: 2, 3\n\nResponse:"
    # An answer turn already begun is continued as written.
    assert sample_prompt("User: hi\n\nAssistant: Hello") == "User: hi\n\nAssistant: Hello"
    # A role word inside a sentence is no role.
    assert sample_prompt("Tell the User: hi") == "User: Tell the User: hi\n\nAssistant:"


@pytest.mark.slow
def test_greedy_answer_carries_the_state_as_a_full_reforward_would(base_model, few_tokens):
    """Token by token with the RNN state equals re-reading the whole text at every token."""
    tokenizer = get_tokenizer()
    allowed = samples._decodable_ids(base_model.spec.vocab_size)
    ids = tokenizer.encode(sample_prompt("What is 2 plus 3?"))
    produced: list[int] = []
    with torch.no_grad():
        for _ in range(samples.SAMPLE_TOKENS):
            logits, _ = base_model(torch.tensor([ids + produced]))
            token = int(torch.argmax(logits[0, -1].masked_fill(~allowed, -torch.inf)))
            if token == 0:
                break
            produced.append(token)
        answer = greedy_answer(base_model, "What is 2 plus 3?")
    assert produced and answer == tokenizer.decode(produced).split("\n\n")[0].strip()


def test_greedy_answer_stops_at_the_blank_line_and_skips_unused_ids(base_model, monkeypatch):
    """A head that always ranks an unused id first, then "\\n\\n": the unused id is passed over
    and the answer ends at the blank line, without it."""
    tokenizer = get_tokenizer()
    allowed = samples._decodable_ids(base_model.spec.vocab_size)
    unused = int((~allowed).nonzero()[0])
    script = iter(tokenizer.encode("Five.") + tokenizer.encode("\n\n") + tokenizer.encode("never"))

    def scripted(idx, state=None):
        logits = torch.zeros(1, idx.shape[1], base_model.spec.vocab_size)
        logits[0, -1, next(script)] = 1.0
        logits[0, -1, unused] = 2.0
        return logits, state

    scripted.emb, scripted.spec = base_model.emb, base_model.spec
    assert greedy_answer(scripted, "q") == "Five."


def test_sample_every_must_be_at_least_one():
    config = RunConfig()
    config.output.sample_every = 0
    assert any(p.field == "output.sample_every" for p in validate(config))


def test_no_prompts_no_hook(workspace):
    ctx = SimpleNamespace(config=make_config(workspace))
    assert sample_hooks(ctx) == []


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def emit(self, kind, **fields):
        self.events.append({"kind": kind, **fields})

    def log(self, message):
        pass


def fake_ctx(model, config, *, rank: int = 0, world_size: int = 1, broadcast=None):
    fabric = SimpleNamespace(world_size=world_size, device=torch.device("cpu"), broadcast=broadcast,
                             autocast=contextlib.nullcontext)
    return SimpleNamespace(config=config, spec=model.spec, fabric=fabric, model=model, log=Recorder(),
                           is_global_zero=rank == 0, step=7)


def test_other_ranks_skip_unless_zero3_where_every_rank_decodes_rank0s_tokens(workspace, base_model, few_tokens):
    config = make_config(workspace, output__sample_prompts=["What is 2 plus 3?"])
    config.hardware.strategy = "ddp"
    calls = []
    counted = lambda idx, state=None: calls.append(idx) or base_model(idx, state)  # noqa: E731
    counted.emb, counted.spec = base_model.emb, base_model.spec
    ddp_rank1 = fake_ctx(counted, config, rank=1, world_size=2)
    Samples(ddp_rank1, config.output.sample_prompts)(ddp_rank1)
    assert calls == [] and ddp_rank1.log.events == []

    # ZeRO-3: rank 1 decodes too, and follows the tokens rank 0 broadcasts, not its own argmax.
    tokenizer = get_tokenizer()
    rank0 = iter(tokenizer.encode("Five.") + [0])
    broadcasts = []
    config.hardware.strategy = "deepspeed_stage_3"
    zero3_rank1 = fake_ctx(counted, config, rank=1, world_size=2,
                           broadcast=lambda token, src: broadcasts.append((token, src)) or next(rank0))
    Samples(zero3_rank1, config.output.sample_prompts)(zero3_rank1)
    assert [e["text"] for e in zero3_rank1.log.events] == ["Five."]
    assert len(broadcasts) == len(tokenizer.encode("Five.")) + 1 and {src for _, src in broadcasts} == {0}
    assert len(calls) == len(broadcasts)  # the prompt, then one forward per token before the end token


def test_a_prompt_outside_the_models_vocabulary_is_a_config_error(tmp_path, workspace):
    from rwkv_tui.trainer.generate import load_for_chat

    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=256)
    model = load_for_chat(path)
    config = make_config(workspace, output__sample_prompts=["What is 2 plus 3?"])
    with pytest.raises(ConfigError) as exc:
        Samples(fake_ctx(model, config), config.output.sample_prompts)
    assert exc.value.field == "output.sample_prompts"


@pytest.mark.slow
def test_samples_at_start_every_n_and_end_answer_with_the_runs_weights(workspace, base_model, tmp_path, few_tokens):
    """Full fine-tuning saved in fp32: the last sample is the saved weights' greedy answer, the
    step-0 one the base model's."""
    from rwkv_tui.trainer.generate import load_for_chat

    prompts = ["What is 2 plus 3?", "User: What is 1 plus 1?"]
    config = make_config(workspace, "full", steps=4, optim__lr_init=1e-3, optim__lr_final=1e-3,
                         output__sample_prompts=prompts, output__sample_every=3, output__save_dtype="fp32")
    result = run(config, tmp_path / "run")
    events = [e for e in read_all_events(RunFolder.at(tmp_path / "run")) if e["kind"] == "sample"]
    assert [(e["step"], e["prompt"]) for e in events] == [(s, p) for s in (0, 3, 4) for p in prompts]
    assert all(isinstance(e["text"], str) for e in events)
    with torch.no_grad():
        assert [e["text"] for e in events[:2]] == [greedy_answer(base_model, p) for p in prompts]
        final = load_for_chat(next(p for p in result.outputs if p.name.startswith("epoch1"))).eval()
        assert [e["text"] for e in events[-2:]] == [greedy_answer(final, p) for p in prompts]
    assert [e["text"] for e in events[:2]] != [e["text"] for e in events[-2:]]  # training changed the answers


@pytest.mark.slow
def test_samples_leave_the_training_rng_alone(workspace, tmp_path, few_tokens):
    """LoRA's dropout draws from the global RNG: a run that samples after every step trains
    exactly as one that never samples (resume exactness rests on the same RNG)."""
    def losses(name, **extra):
        run(make_config(workspace, "lora", steps=4, optim__lr_init=1e-2, optim__lr_final=1e-2,
                        method__dropout=0.1, **extra), tmp_path / name)
        return [e["loss"] for e in read_all_events(RunFolder.at(tmp_path / name)) if e["kind"] == "step"]

    sampled = losses("sampled", output__sample_prompts=["What is 2 plus 3?"], output__sample_every=1)
    assert sampled == losses("plain")
    assert [e["step"] for e in read_all_events(RunFolder.at(tmp_path / "sampled"))
            if e["kind"] == "sample"] == [0, 1, 2, 3, 4]
