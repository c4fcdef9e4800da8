"""Chat that fits a GPU box: the one-token decode path, the carried conversation state,
`/reset`, `--compare` (CLI and TUI) and `--device`. CPU, tiny models."""

from __future__ import annotations

import pytest
import torch

from conftest import wait_for, write_tiny_checkpoint
from rwkv_tui import kernels
from rwkv_tui.trainer.chat import ChatSession, chat_device, lay_out_for_decoding, load_contenders, zero_state
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.generate import SamplingConfig, load_for_chat
from rwkv_tui.trainer.model import load_model
from rwkv_tui.trainer.world_tokenizer import get_tokenizer

GREEDY = SamplingConfig(temperature=0.0, max_tokens=12)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _with_tuned_state(model, seed: int = 0):
    """Mount a random tuned state, as state tuning leaves one (`time_state`, value-major [H,N,N])."""
    g = torch.Generator().manual_seed(seed)
    for block in model.blocks:
        H, N = block.att.n_head, block.att.head_size
        block.att.time_state = torch.nn.Parameter(torch.randn(H, N, N, generator=g) * 0.3)
    return model


@pytest.mark.parametrize("version", ["x070", "x060", "x052"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_token_decode_equals_the_sequence_forward(tmp_path, version, dtype):
    """`model(idx[B,1], state)` (the written-out step) continues exactly where the sequence
    forward (the CPU kernel in fp32, the chunked op in bf16) would, from a tuned start state,
    in the model's dtype; the op the training reports (last_wkv_op) is the sequence's."""
    path, _ = write_tiny_checkpoint(tmp_path, version=version, n_layer=2, n_embd=64, vocab_size=256)
    model = _with_tuned_state(load_model(path)).to(dtype).eval()
    tokens = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, full_state = model(tokens)
        op = model.last_wkv_op
        logits, state = model(tokens[:, :4])
        steps = [logits]
        for t in range(4, tokens.shape[1]):
            logits, state = model(tokens[:, t: t + 1], state=state)
            steps.append(logits)
    assert model.last_wkv_op == op and op in ("cpu", "torch_chunked")  # a sequence op, not the step
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert _rel(torch.cat(steps, dim=1), full) < tolerance
    for ours, whole in zip(state, full_state):
        for a, b in zip(ours, whole):
            assert a.dtype == b.dtype and _rel(a, b) < tolerance


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_decode_equals_the_module_path(tmp_path, dtype):
    """RWKV-7's compiled one-token functions (inference) give what the modules give with the
    written-out step (the path LoRA-wrapped layers and gradients take), from no state on."""
    from rwkv_tui.trainer.model.one_token import fused_decoding

    path, _ = write_tiny_checkpoint(tmp_path, n_layer=3, n_embd=64, vocab_size=256)
    model = _with_tuned_state(load_model(path)).to(dtype).eval()
    tokens = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(2))

    def decode(grad: bool):
        state, steps = None, []
        with torch.set_grad_enabled(grad):
            assert fused_decoding(tokens, model.blocks[0].att.key) is not grad
            for t in range(tokens.shape[1]):
                logits, state = model(tokens[:, t: t + 1], state=state)
                steps.append(logits.detach())
        return torch.cat(steps, dim=1), state

    (fused, fused_state), (modules, module_state) = decode(False), decode(True)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2
    assert _rel(fused, modules) < tolerance
    for ours, theirs in zip(fused_state, module_state):
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype and _rel(a, b.detach()) < tolerance


def test_decoding_layout_keeps_the_model(tmp_path):
    """Column-major linear weights: same shapes, keys and results; prefill and decode alike."""
    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    plain, laid_out = load_for_chat(path).eval(), lay_out_for_decoding(load_for_chat(path))
    head = laid_out.head.weight
    assert head.shape == plain.head.weight.shape and head.t().is_contiguous() and not head.requires_grad
    assert laid_out.state_dict().keys() == plain.state_dict().keys()
    value = laid_out.blocks[0].ffn.value.weight  # narrowing: column-major only for the zero-skipping kernel
    assert value.t().is_contiguous() is kernels.skips_zero_rows()
    assert value.is_contiguous() is not value.t().is_contiguous()
    assert all(block.frozen_decode_weights is not None for block in laid_out.blocks)
    assert "frozen_decode_weights" not in plain.blocks[0].__dict__
    tokens = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a, state_a = plain(tokens)
        b, state_b = laid_out(tokens)
        a1, _ = plain(tokens[:, :1], state_a)
        b1, _ = laid_out(tokens[:, :1], state_b)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b1, a1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 5])
@pytest.mark.parametrize("version", ["x070", "x060"])
def test_last_only_logits_are_the_last_row(tmp_path, version, length):
    """last_only runs the last block's channel mix on the last two positions only; the logits
    and the whole state are still the full forward's, from a carried state too."""
    path, _ = write_tiny_checkpoint(tmp_path, version=version)
    model = load_model(path).eval()
    tokens = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])[:, :length]
    with torch.no_grad():
        _, start = model(torch.tensor([[7, 8], [8, 7]]))
        for state in (None, start):
            full, full_state = model(tokens, state)
            last, last_state = model(tokens, state, last_only=True)
            assert last.shape == (2, 1, full.shape[-1])
            torch.testing.assert_close(last, full[:, -1:])
            torch.testing.assert_close(last_state, full_state)


class Recording(torch.nn.Module):
    """A model that remembers every token sequence it is given."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.emb, self.calls = model, model.emb, []

    def forward(self, idx, state=None, last_only=False):
        self.calls.append(idx[0].tolist())
        return self.inner(idx, state=state, last_only=last_only)


def test_the_conversation_is_carried_in_the_state_not_re_read(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    model = Recording(lay_out_for_decoding(load_for_chat(path)))
    tokenizer = get_tokenizer()
    session = ChatSession(model, tokenizer, GREEDY, system="Be brief.")
    first = session.say("What is 2 plus 3?")
    assert model.calls[0] == tokenizer.encode("System: Be brief.\n\nUser: What is 2 plus 3?\n\nAssistant:")
    assert all(len(call) == 1 for call in model.calls[1:])  # the reply: one token at a time
    assert first.owed and (first.reply + "\n\n").endswith(first.owed)
    turn_one = len(model.calls)
    second = session.say("And 4 plus 4?")
    # The second message feeds only what the state lacks: the end of the stop and the new turn.
    assert model.calls[turn_one] == tokenizer.encode(f"{first.owed}User: And 4 plus 4?\n\nAssistant:")
    assert second.prompt_tokens == len(model.calls[turn_one])
    # The carried state equals one pass over everything the model read, from the start.
    everything = [token for call in model.calls for token in call]
    with torch.no_grad():
        _, state = model.inner(torch.tensor([everything]))
    for ours, theirs in zip(session.state, state):
        for a, b in zip(ours, theirs):
            assert _rel(a, b) < 1e-5


def test_reset_starts_the_conversation_over(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    session = ChatSession(lay_out_for_decoding(load_for_chat(path)), get_tokenizer(), GREEDY)
    first = session.say("Hello")
    again = session.say("Hello")
    session.reset()
    assert session.state is None and session.owed is None
    assert session.say("Hello").reply == first.reply
    assert again.prompt_tokens < first.prompt_tokens + len(first.owed)  # no history re-read


def test_answer_leaves_the_session_unchanged(tmp_path):
    """What the TUI worker calls: the UI thread accepts the turn (or drops it after a reset)."""
    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    session = ChatSession(lay_out_for_decoding(load_for_chat(path)), get_tokenizer(), GREEDY)
    turn = session.answer("Hello")
    assert session.state is None and session.owed is None
    session.accept(turn)
    assert session.state is turn.state and session.owed == turn.owed


def test_compare_with_a_state_shares_one_model_and_starts_the_base_from_zeros(tmp_path):
    from rwkv_tui.trainer.adapters import save_adapter
    from rwkv_tui.trainer.config import RunConfig
    from rwkv_tui.trainer.peft import build_method

    path, spec = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    model = load_model(path)
    method = build_method(RunConfig.for_method("state").method)
    method.apply(model)
    with torch.no_grad():
        for block in model.blocks:
            block.att.time_state.normal_(0, 0.5)
    state_file = save_adapter(model, method, tmp_path / "s.pth", spec)
    contenders = load_contenders(path, state=str(state_file), device="cpu")
    assert contenders.base is contenders.tuned
    base, tuned = contenders.sessions(get_tokenizer(), GREEDY)
    assert (base.label, tuned.label) == ("base", "tuned") and tuned.start_state is None  # its own: the tuned one
    plain = lay_out_for_decoding(load_for_chat(path))
    with torch.no_grad():
        tokens = torch.tensor([[1, 2, 3]])
        from_zeros, _ = contenders.tuned(tokens, base.start_state)
        from_tuned, _ = contenders.tuned(tokens)
        base_model, _ = plain(tokens)
    assert _rel(from_zeros, from_tuned) > 1e-3  # the tuned state makes a difference
    assert _rel(from_zeros, base_model) < 1e-6  # from zeros, the tuned model is the base
    assert base.say("Hi").reply is not None and tuned.say("Hi").state is not None


def _lora_adapter(tmp_path):
    from rwkv_tui.trainer.adapters import save_adapter
    from rwkv_tui.trainer.config import RunConfig
    from rwkv_tui.trainer.peft import build_method

    path, spec = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    model = load_model(path)
    method = build_method(RunConfig.for_method("lora", method__r=4).method)
    method.apply(model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # a trained adapter: B no longer zero
    return path, save_adapter(model, method, tmp_path / "a.pth", spec)


def test_chat_cli_compare_answers_with_base_and_tuned(tmp_path, capsys):
    from rwkv_tui.cli import main

    path, adapter = _lora_adapter(tmp_path)
    args = ["--prompt", "Hello", "--prompt", "/reset", "--prompt", "Hello", "--max-tokens", "6",
            "--temperature", "0", "--device", "cpu"]
    assert main(["chat", str(path), "--adapter", str(adapter), "--compare", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("Assistant (base):") == 2 and out.count("Assistant (tuned):") == 2
    assert "— new conversation —" in out
    base_reply = out.split("Assistant (base):")[1].split("\n\n")[0]
    tuned_reply = out.split("Assistant (tuned):")[1].split("\n\n")[0]
    assert main(["chat", str(path), *args]) == 0
    assert capsys.readouterr().out.split("Assistant:")[1].split("\n\n")[0] == base_reply
    assert main(["chat", str(path), "--adapter", str(adapter), *args]) == 0
    assert capsys.readouterr().out.split("Assistant:")[1].split("\n\n")[0] == tuned_reply


def test_compare_needs_something_tuned_and_cuda_needs_a_gpu(tmp_path, capsys):
    from rwkv_tui.cli import main

    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    assert main(["chat", str(path), "--compare", "--prompt", "Hi", "--device", "cpu"]) == 2
    assert "--adapter FILE or --state FILE" in capsys.readouterr().err
    assert chat_device("cpu") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="unknown device"):
        chat_device("gpu0")
    if not torch.cuda.is_available():
        assert chat_device("auto") == (torch.device("cpu"), torch.float32)
        assert main(["chat", str(path), "--device", "cuda", "--prompt", "Hi"]) == 2
        assert "--device cpu" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_chat_runs_in_bf16_on_the_gpu(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    from rwkv_tui.trainer.chat import load_chat_model

    model = load_chat_model(path, device="cuda")
    assert model.emb.weight.dtype == torch.bfloat16 and model.emb.weight.is_cuda
    session = ChatSession(model, get_tokenizer(), GREEDY)
    session.say("Hello")
    assert session.state[0][1].dtype == torch.float32 and session.state[0][1].is_cuda


@pytest.mark.asyncio
async def test_chat_screen_compares_base_and_tuned(tmp_path):
    from rwkv_tui.app import RwkvTuiApp
    from rwkv_tui.screens.chat import ChatScreen

    path, adapter = _lora_adapter(tmp_path)
    app = RwkvTuiApp(runs_root=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(ChatScreen(str(path), adapter=str(adapter), max_tokens=8, compare=True, device="cpu"))
        screen = app.screen
        await wait_for(pilot, lambda: screen.model is not None and not screen.query_one("#chat-input").disabled,
                       timeout=60)
        assert [s.label for s in screen.sessions] == ["base", "tuned"]
        screen.query_one("#chat-input").value = "Hello"
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.history) == 1, timeout=60)
        lines = "\n".join(str(line.text) for line in screen.query_one("#chat-log").lines)
        assert "Assistant (base):" in lines and "Assistant (tuned):" in lines
        assert all(s.owed is not None for s in screen.sessions)  # both carry their conversation
        await pilot.press("ctrl+r")
        assert all(s.owed is None for s in screen.sessions) and screen.history == []
        await pilot.press("ctrl+b")  # back to the tuned model alone
        await wait_for(pilot, lambda: len(screen.sessions) == 1 and not screen.query_one("#chat-input").disabled,
                       timeout=60)


def test_chat_on_the_cpu_keeps_freed_memory_where_the_allocator_is_glibc():
    import platform

    from rwkv_tui.trainer.chat import keep_freed_memory

    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
