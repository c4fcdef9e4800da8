"""A conversation with a model, carried in its RNN state, and what `chat --compare` puts side by side.

An RWKV model reads a conversation once: after each reply the session keeps the state and,
on the next message, feeds only what the state has not seen yet: the rest of the stop string
that ended the reply (the token completing "\\n\\n" is sampled, not fed) and the new
`User: …\\n\\nAssistant:` turn. The history is never re-read, so a turn costs the same at the
hundredth message as at the first. `reset()` starts over from the start state.

Models for chatting run in bf16 on a GPU and in fp32 on the CPU (`chat_device`); on the CPU
their linear weights are laid out for one-token decoding (`lay_out_for_decoding`).
"""

from __future__ import annotations

import ctypes
import functools
import platform
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from rwkv_tui import kernels
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.generate import Fed, SamplingConfig, chat_prompt, generate, load_for_chat
from rwkv_tui.trainer.model.rwkv7 import freeze_for_decoding


def chat_device(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """"auto" | "cpu" | "cuda" | "cuda:N" -> (device, dtype): bf16 on a GPU, fp32 on the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}", field="--device",
                          hint="use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cpu":
        return chosen, torch.float32
    if chosen.type != "cuda":
        raise ConfigError(f"unsupported device {device!r}", field="--device", hint="use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError("no CUDA GPU is visible to torch", field="--device",
                          hint="use --device cpu, or install a CUDA build of torch")
    if chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ConfigError(f"there is no GPU {chosen.index} (this machine has {torch.cuda.device_count()})",
                          field="--device", hint="use --device cuda:0 … or auto")
    return chosen, torch.bfloat16


def lay_out_for_decoding(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients, and on the CPU every linear weight that widens or keeps the width
    (in <= out) stored column-major (the same [out, in] tensor, its transpose contiguous). For one
    token, a matrix-vector product over [in, out] memory runs ~1.5x faster with MKL than over
    [out, in] rows (the `rwkv` package stores all its weights transposed for this reason); a
    narrowing one (the channel mix's value, 4C -> C) stays row-major, where the dot-product form
    measured ~15% faster, except RWKV-7's where the CPU kernel that skips the weight rows its
    relu² input zeroes is built (kernels.value_product: ~40% less time at half the rows zero).
    Prefill speed does not change.
    RWKV-7 blocks also keep their one-token call's weights (rwkv7.freeze_for_decoding).
    Only for a model that is not trained or rewrapped afterwards: an optimizer would see the new
    strides, and a replaced module would not be seen by the kept weights."""
    model.eval().requires_grad_(False)
    if model.emb.weight.device.type == "cpu":
        sparse_values = kernels.skips_zero_rows()
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and (module.in_features <= module.out_features or (
                    sparse_values and name.endswith("ffn.value") and model.spec.version == "x070")):
                module.weight.data = module.weight.detach().t().contiguous().t()
    if model.spec.version == "x070":
        for block in model.blocks:
            freeze_for_decoding(block)
    return model


@functools.cache
def keep_freed_memory() -> bool:
    """Let this process's C allocator (glibc) keep freed buffers for reuse: by default it hands
    each freed buffer above a few hundred KB back to the OS and faults in fresh pages for the
    next, which a CPU forward (new activation-sized tensors every operator) pays on every
    operator: ~8% of a 256-token prefill at C768 here. Process-wide, once; False where the C
    library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # Below 64 MB from the heap (reused); up to 512 MB of free heap top kept instead of trimmed.
    return bool(libc.mallopt(m_mmap_threshold, 64 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))


def load_chat_model(model_path, adapter=None, state=None, lora_alpha: float | None = None,
                    device: str = "auto") -> nn.Module:
    """`generate.load_for_chat` on the chosen device in its chat dtype, laid out for decoding
    (and, on the CPU, this process's allocator set to keep freed buffers)."""
    where, dtype = chat_device(device)
    if where.type == "cpu":
        keep_freed_memory()
    return lay_out_for_decoding(load_for_chat(model_path, adapter=adapter, state=state,
                                              lora_alpha=lora_alpha, device=where, dtype=dtype))


def zero_state(model: nn.Module, batch_size: int = 1) -> list:
    """The all-zero state: where the base model starts, even when a tuned state is mounted."""
    return model.initial_state(batch_size, tuned=False)


@dataclass
class Turn:
    """One answered message: the reply and what the session carries on with after it."""
    message: str
    reply: str
    state: list | None   # after everything fed this turn
    owed: str            # the end of `reply + stop` the state has not read (fed before the next message)
    prompt_tokens: int   # tokens this message fed before the reply: what carrying the state keeps small


class ChatSession:
    """One conversation with one model. `say(message)` answers and carries the state over;
    `answer` + `accept` do the same in two halves, so a worker thread can answer while the UI
    thread owns the session (and may reset it meanwhile)."""

    def __init__(self, model: nn.Module, tokenizer, sampling: SamplingConfig, system: str | None = None,
                 start_state: list | None = None, label: str = "") -> None:
        self.model, self.tokenizer, self.sampling, self.system = model, tokenizer, sampling, system
        self.start_state = start_state  # None: the model's own start (its tuned state, if mounted)
        self.label = label
        self.reset()

    def reset(self) -> None:
        """Forget the conversation: the next message starts from the start state."""
        self.state = self.start_state
        self.owed: str | None = None  # None: nothing said yet (the next prompt opens the conversation)

    def prompt_for(self, message: str) -> str:
        """The text the model reads for `message`, from the carried state."""
        if self.owed is None:
            return chat_prompt([], message, self.system)
        return f"{self.owed}User: {message}\n\nAssistant:"

    def answer(self, message: str, on_piece: Callable[[str], None] | None = None) -> Turn:
        """The reply from the carried state, the session unchanged; `on_piece` sees the text as it comes."""
        prompt = self.prompt_for(message)
        fed = Fed()
        reply = ""
        for piece in generate(self.model, self.tokenizer, prompt, self.sampling, state=self.state, fed=fed):
            reply += piece
            if on_piece is not None:
                on_piece(piece)
        return Turn(message, reply, fed.state, self._unfed(reply, fed.tokens), len(self.tokenizer.encode(prompt)))

    def accept(self, turn: Turn) -> None:
        """Carry on from `turn` (an answer to this session's last state)."""
        self.state, self.owed = turn.state, turn.owed

    def say(self, message: str, on_piece: Callable[[str], None] | None = None) -> Turn:
        turn = self.answer(message, on_piece)
        self.accept(turn)
        return turn

    def _unfed(self, reply: str, tokens: list[int]) -> str:
        """The end of `reply + stop` that the state has not read: the generated tokens it has
        read spell a prefix of it (all but the token that completed the stop), or, after a
        reply cut at max_tokens or the end token, all of the reply, and then the stop is owed."""
        said = (reply + self.sampling.stop).encode()
        read = self.tokenizer.decode_bytes(tokens)
        if read and said.startswith(read):
            # A character split between the last fed token and the next would be dropped (a rare case).
            return said[len(read):].decode("utf-8", errors="ignore")
        return self.sampling.stop


@dataclass
class Contenders:
    """What `chat --compare` sets side by side: the base model and the tuned one (which may be
    the same weights with a different start state, when a state file is the difference)."""
    base: nn.Module
    base_start: list | None
    tuned: nn.Module

    def sessions(self, tokenizer, sampling: SamplingConfig, system: str | None = None) -> list[ChatSession]:
        return [ChatSession(self.base, tokenizer, sampling, system, self.base_start, label="base"),
                ChatSession(self.tuned, tokenizer, sampling, system, label="tuned")]


def load_contenders(model_path, adapter=None, state=None, lora_alpha: float | None = None,
                    device: str = "auto") -> Contenders:
    """Base and tuned models for a side-by-side chat. A state file (as --state or as the
    adapter) only changes where a conversation starts, so both share one model then; an
    adapter is merged into a second copy (twice the model's memory)."""
    from rwkv_tui.trainer.adapters import is_state_file, load_adapter_file

    if not (adapter or state):
        raise ConfigError("--compare needs something to compare with", field="--compare",
                          hint="add --adapter FILE or --state FILE")
    tuned = load_chat_model(model_path, adapter=adapter, state=state, lora_alpha=lora_alpha, device=device)
    if state or is_state_file(load_adapter_file(adapter)[0]):
        return Contenders(base=tuned, base_start=zero_state(tuned), tuned=tuned)
    return Contenders(base=load_chat_model(model_path, device=device), base_start=None, tuned=tuned)
