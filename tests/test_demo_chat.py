"""The demo workspace trains and the chat generates in the User:/Assistant: format."""

from __future__ import annotations

import torch

from rwkv_tui.trainer.config import load_config
from rwkv_tui.trainer.demo import create_demo, demo_texts
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
    assert len(ws.data.read_text().splitlines()) == len(demo_texts())
    assert create_demo(tmp_path / "demo").model.stat().st_mtime == ws.model.stat().st_mtime  # reused


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

    def forward(self, idx, state=None):
        logits = torch.full((1, idx.shape[1], 65536), -1e9)
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
