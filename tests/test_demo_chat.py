"""The demo workspace trains and the chat generates in the User:/Assistant: format."""

from __future__ import annotations

import json

import pytest
import torch

from rwkv_tui.trainer.config import load_config
from rwkv_tui.trainer.demo import DEMO_FACTS, create_demo, demo_questions, demo_texts, sampled_answers
from rwkv_tui.trainer.generate import SamplingConfig, chat_prompt, generate, sample_token
from rwkv_tui.trainer.model import load_model
from rwkv_tui.trainer.world_tokenizer import get_tokenizer


def test_demo_workspace_is_complete_and_valid(tmp_path):
    from rwkv_tui.trainer.checkpoint import inspect_checkpoint
    from rwkv_tui.trainer.config import validate

    ws = create_demo(tmp_path / "demo")
    spec = inspect_checkpoint(ws.model)
    assert (spec.n_layer, spec.n_embd, spec.vocab_size) == (2, 128, 65536)
    config = load_config(ws.config)
    assert config.model.path == str(ws.model) and config.hardware.accelerator == "cpu"
    assert validate(config, spec, cuda_available=False) == []
    records = [json.loads(line)["text"] for line in ws.data.read_text().splitlines()]
    assert records == demo_texts() and all(answer in text for text, (_, answer) in zip(records, DEMO_FACTS))
    assert config.output.sample_prompts == demo_questions()  # asked at step 0 and at the end
    assert create_demo(tmp_path / "demo").model.stat().st_mtime == ws.model.stat().st_mtime  # reused


def test_an_older_demo_folder_gets_this_versions_facts(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "demo-chat.jsonl").write_text(json.dumps({"text": "User: old?\n\nAssistant: old."}) + "\n")
    ws = create_demo(folder)
    assert [json.loads(line)["text"] for line in ws.data.read_text().splitlines()] == demo_texts()


def test_chat_prompt_format():
    assert chat_prompt([("Hi", "Hello!")], "How are you?", system="Be brief.") == (
        "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: How are you?\n\nAssistant:")


def test_sampling_respects_top_p_and_greedy():
    logits = torch.tensor([0.0, 5.0, 4.9, -10.0])
    assert sample_token(logits, 0.0, 1.0) == 1
    g = torch.Generator().manual_seed(0)
    picks = {sample_token(logits, 1.0, 0.5, g) for _ in range(50)}
    assert picks == {1}  # token 1 alone holds more than half the mass


class FixedModel(torch.nn.Module):
    """Emits a scripted token sequence whatever the input (to test stopping and decoding)."""

    def __init__(self, script):
        super().__init__()
        self.emb = torch.nn.Embedding(1, 1)
        self.script, self.calls = script, 0

    def forward(self, idx, state=None, last_only=False):
        logits = torch.full((1, 1 if last_only else idx.shape[1], 65536), -1e9)
        logits[0, -1, self.script[min(self.calls, len(self.script) - 1)]] = 0.0
        self.calls += 1
        return logits, state


def test_generation_stops_at_a_blank_line_and_joins_split_characters():
    tok = get_tokenizer()
    emoji_bytes = "😀".encode()
    byte_tokens = [next(i for i in range(1, 300) if tok.token_bytes(i) == bytes([b])) for b in emoji_bytes]
    script = tok.encode(" Hi") + byte_tokens + tok.encode("\n\nUser: more")
    out = "".join(generate(FixedModel(script), tok, "User: x\n\nAssistant:", SamplingConfig(temperature=0)))
    assert out == " Hi😀"


def test_chat_cli_with_an_adapter(tmp_path, capsys):
    from conftest import write_tiny_checkpoint
    from rwkv_tui.cli import main
    from rwkv_tui.trainer.adapters import save_adapter
    from rwkv_tui.trainer.config import RunConfig
    from rwkv_tui.trainer.peft import build_method

    path, spec = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    model = load_model(path)
    method = build_method(RunConfig.for_method("lora", method__r=4).method)
    method.apply(model)
    adapter = save_adapter(model, method, tmp_path / "a.pth", spec)
    assert main(["chat", str(path), "--adapter", str(adapter), "--prompt", "Hello", "--max-tokens", "5",
                 "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("User: Hello\nAssistant:")


def _sample(step, prompt, text):
    return {"t": 0.0, "kind": "sample", "step": step, "prompt": prompt, "text": text}


def test_sampled_answers_pair_each_prompts_first_and_last_answer():
    events = [_sample(0, "A?", " noise"), _sample(0, "B?", "more noise"), {"kind": "step", "step": 1},
              _sample(15, "A?", "half"), _sample(30, "A?", " Velmora is an island in the Amber Sea. "),
              _sample(30, "B?", "b")]
    a, b = sampled_answers(events)
    assert (a.prompt, a.first_step, a.first, a.last_step, a.last) == (
        "A?", 0, "noise", 30, "Velmora is an island in the Amber Sea.")
    assert (b.first, b.last) == ("more noise", "b") and a.expected is None
    assert sampled_answers([_sample(0, DEMO_FACTS[1][0], "x")])[0].expected == DEMO_FACTS[1][1]


def test_demo_outcome_shows_before_and_after_and_how_to_chat(tmp_path):
    from rwkv_tui.commands.demo import outcome_lines

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    question, answer = DEMO_FACTS[0]
    events = [_sample(0, question, "扇Clock FLAGS"), _sample(30, question, answer),
              {"t": 0.0, "kind": "done", "step": 30, "reason": "finished",
               "outputs": [str(run_dir / "epoch2-lora.pth"), str(run_dir / "final-merged.pth")]}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    lines = outcome_lines(tmp_path / "demo-model.pth", run_dir)
    assert "step 0 → step 30" in lines[1]
    assert lines[2:5] == [f"  {question}", "    before: 扇Clock FLAGS", f"    after:  {answer}"]
    assert lines[-1].endswith(f"--adapter {run_dir / 'epoch2-lora.pth'} --temperature 0")
    (run_dir / "events.jsonl").write_text(json.dumps(events[0]) + "\n")  # detached, still training
    assert "rwkv-tui attach" in outcome_lines(tmp_path / "demo-model.pth", run_dir)[0]
    failed = [{"t": 0.0, "kind": "error", "message": "out of memory"}, {"t": 0.0, "kind": "done", "reason": "error"}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in (events[0], *failed)))
    assert outcome_lines(tmp_path / "demo-model.pth", run_dir) == [f"run folder: {run_dir} (failed: out of memory)"]


@pytest.mark.parametrize("user_threads", [None, "3"])
def test_the_demo_trainer_runs_on_one_thread_unless_told(tmp_path, monkeypatch, capsys, user_threads):
    import rwkv_tui.app
    import rwkv_tui.launch
    from rwkv_tui.cli import main

    if user_threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # restored after the test
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user_threads)
    seen = {}
    monkeypatch.setattr(rwkv_tui.launch, "launch_training",
                        lambda config, run_dir: seen.update(threads=rwkv_tui.launch.launch_environment(None)
                                                            .get("OMP_NUM_THREADS"), config=config))
    monkeypatch.setattr(rwkv_tui.app, "run_app", lambda attach, runs_root: seen.update(attach=attach) or 0)
    assert main(["demo", "--dir", str(tmp_path / "demo")]) == 0
    assert seen["threads"] == (user_threads or "1")
    assert load_config(seen["config"]).output.sample_prompts == demo_questions()
    assert f"still training: `rwkv-tui attach {seen['attach']}`" in capsys.readouterr().out  # detached early


@pytest.mark.slow
def test_the_demo_learns_its_facts_headless(tmp_path, capsys, monkeypatch):
    """`rwkv-tui demo --no-ui` end to end on the CPU: before training the model answers the
    questions with noise, after it greedy chat gives each fact exactly (samples and chat alike)."""
    from rwkv_tui.cli import main
    from rwkv_tui.trainer.generate import load_for_chat
    from rwkv_tui.trainer.training.folder import RunFolder, read_all_events

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the demo sets it: gone again after the test
    threads = torch.get_num_threads()
    try:
        assert main(["demo", "--no-ui", "--dir", str(tmp_path / "demo")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    (run_dir,) = [events.parent for events in (tmp_path / "demo" / "runs").glob("*/events.jsonl")]
    events = read_all_events(RunFolder.at(run_dir))
    answers = sampled_answers(events)
    assert [a.prompt for a in answers] == demo_questions()
    assert all(a.first_step == 0 and a.first != a.expected for a in answers)  # it did not know
    assert [a.last for a in answers] == [answer for _, answer in DEMO_FACTS], out
    assert f"after:  {DEMO_FACTS[0][1]}" in out

    # The adapter the command points at answers the same in the chat's own loader.
    done = next(e for e in events if e["kind"] == "done")
    adapter = [f for f in done["outputs"] if f.endswith("-lora.pth")][-1]
    assert f"--adapter {adapter}" in out
    model = load_for_chat(tmp_path / "demo" / "demo-model.pth", adapter=adapter)
    tok = get_tokenizer()
    for question, answer in DEMO_FACTS:
        reply = "".join(generate(model, tok, chat_prompt([], question), SamplingConfig(temperature=0)))
        assert reply.strip() == answer
