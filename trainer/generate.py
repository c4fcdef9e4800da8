"""Text generation with a (fine-tuned) model in RNN mode: the "try it" after training.

The prompt runs through the model once in sequence mode; then one token at a time with
the carried state. Sampling uses temperature and nucleus (top-p); generation stops at a
stop string (the blank line that ends an Assistant turn) or after `max_tokens`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 0.7
    max_tokens: int = 200
    stop: str = "\n\n"
    seed: int | None = None


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator=None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    keep = cumulative - sorted_probs < top_p  # the smallest set whose mass reaches top_p
    keep[0] = True
    sorted_probs = sorted_probs * keep
    choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
    return int(order[choice])


@dataclass
class Fed:
    """What a `generate` call has run through the model so far, updated as it goes: the state
    after it, and the generated tokens in that state (the prompt's excluded). The token that
    ends a reply (the one completing the stop string, or the end token) is sampled, never fed."""
    state: list | None = None
    tokens: list[int] = field(default_factory=list)


@torch.no_grad()
def generate(model, tokenizer, prompt: str, sampling: SamplingConfig, state=None,
             fed: Fed | None = None) -> Iterator[str]:
    """Yield text pieces as they are produced (whole UTF-8 characters only). The prompt runs
    from `state` (None: the model's initial state); `fed`, when given, follows the state."""
    model.eval()
    generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
    device = model.emb.weight.device
    fed = fed if fed is not None else Fed()
    ids = tokenizer.encode(prompt)
    logits, state = model(torch.tensor([ids], device=device), state=state, last_only=True)
    fed.state = state
    last = logits[0, -1]
    pending: list[int] = []
    produced, emitted = "", 0
    for _ in range(sampling.max_tokens):
        token = sample_token(last, sampling.temperature, sampling.top_p, generator)
        if token == 0:  # end of text
            break
        pending.append(token)
        try:
            produced += tokenizer.decode_bytes(pending).decode("utf-8")
            pending.clear()
        except UnicodeDecodeError:
            pass  # half a character: wait for the rest
        if sampling.stop and sampling.stop in produced:
            produced = produced[: produced.index(sampling.stop)]
            break
        # Hold back a tail that could be the start of the stop string.
        held = next((n for n in range(len(sampling.stop) - 1, 0, -1) if produced.endswith(sampling.stop[:n])), 0)
        if len(produced) - held > emitted:
            yield produced[emitted: len(produced) - held]
            emitted = len(produced) - held
        logits, state = model(torch.tensor([[token]], device=device), state=state)
        fed.state = state
        fed.tokens.append(token)
        last = logits[0, -1]
    if len(produced) > emitted:
        yield produced[emitted:]


def chat_prompt(history: list[tuple[str, str]], message: str, system: str | None = None) -> str:
    """The tutorials' format: `User: …\\n\\nAssistant: …` turns separated by blank lines."""
    parts = [f"System: {system}"] if system else []
    for user, assistant in history:
        parts += [f"User: {user}", f"Assistant: {assistant}"]
    parts.append(f"User: {message}")
    return "\n\n".join(parts) + "\n\nAssistant:"


def load_for_chat(model_path, adapter=None, state=None, lora_alpha: float | None = None,
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A model (fp32 on the CPU unless told otherwise) with an adapter merged in memory (in fp32
    on the CPU: nothing of the update is rounded away, whatever dtype it then runs in), or a
    tuned state mounted (our model starts every sequence from it, on every RWKV version; a
    state file given as the adapter is mounted the same way)."""
    from rwkv_tui.trainer.adapters import detect_method, load_adapter_file, merge_into, mount_state
    from rwkv_tui.trainer.checkpoint import load_checkpoint
    from rwkv_tui.trainer.model import model_from_state_dict

    weights, spec = load_checkpoint(model_path)
    if adapter:
        tensors, metadata = load_adapter_file(adapter)
        if tensors and (metadata or {}).get("method", detect_method(tensors, adapter)) == "state":
            weights = mount_state(weights, tensors, path=adapter)
        else:
            weights = merge_into(weights, tensors, metadata, alpha=lora_alpha, path=adapter)
    if state:
        weights = mount_state(weights, load_adapter_file(state)[0], path=state)
    return model_from_state_dict(weights, spec, device=device, dtype=dtype)
