"""How much GPU memory a run needs, before it runs.

`estimate(spec, config)` adds up what a training step keeps on the GPU: the CUDA context,
the frozen weights (bf16, or int8/nf4 for the quantized linear maps), the trainable
parameters with their fp32 master copies, gradients and Adam moments, the activations
(with or without gradient checkpointing), the logits, the WKV kernel's state
checkpoints, and an allocator margin. With data.chunk_ctx (infctx) the activations, logits
and kernel checkpoints are one chunk's, plus the states carried across chunk boundaries. The constants in `CALIBRATION` are the knobs the
GPU benchmark tunes against measured peaks; the tests hold the estimate against the
tutorials' VRAM tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rwkv_tui.trainer.peft.catalog import method_info
from rwkv_tui.trainer.spec import ModelSpec

GB = 1024**3

CALIBRATION = {
    "cuda_context_bytes": 0.8 * GB,   # CUDA/cuBLAS context, kernels and allocator pools after the first step
    "activation_factor_no_cp": 34.0,  # bf16 values per channel a block keeps for backward, per token
    "bytes_per_trainable": 16.0,      # fp32 weight + fp32 grad + Adam m and v
    "logit_bytes_per_entry": 10.0,    # bf16 logits + fp32 softmax + fp32 grad, per vocab entry per token
    "fragmentation": 0.10,            # caching-allocator slack on top of everything
    "int8_bytes_per_weight": 1.02,    # int8 + one fp32 scale per row
    "nf4_bytes_per_weight": 0.53,     # 4 bits + blockwise absmax (double-quantized)
}

_LINEAR_SUFFIXES = ("att.receptance.weight", "att.key.weight", "att.value.weight", "att.output.weight",
                    "ffn.key.weight", "ffn.value.weight")


@dataclass
class VramBreakdown:
    parts: dict[str, float] = field(default_factory=dict)  # name -> bytes

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def fits(self, free_bytes: float) -> bool:
        return self.total <= free_bytes

    def rows(self) -> list[tuple[str, float]]:
        return [(name, value / GB) for name, value in self.parts.items() if value > 0]


def linear_parameter_count(spec: ModelSpec) -> int:
    """Parameters in the large per-block linear maps (the ones quantization shrinks)."""
    C, F = spec.n_embd, spec.dim_ffn
    if spec.version == "x070":
        return spec.n_layer * (4 * C * C + 2 * C * F)
    return spec.n_layer * (6 * C * C + 2 * C * F)  # RWKV-6/5: r, k, v, g, output + the ffn's receptance


def trainable_parameter_count(spec: ModelSpec, method) -> int:
    """Exact number of trained parameters for a `MethodConfig` on this architecture."""
    C, F, L = spec.n_embd, spec.dim_ffn, spec.n_layer
    shapes = {"att.receptance": (C, C), "att.key": (C, C), "att.value": (C, C), "att.output": (C, C),
              "att.gate": (C, C), "ffn.receptance": (C, C), "ffn.key": (F, C), "ffn.value": (C, F)}
    name = method.name
    if name == "full":
        return spec.n_params
    if name == "state":
        return L * spec.n_head * spec.head_size * spec.head_size
    if name in ("lora", "pissa"):
        return L * sum(method.r * (shapes[t][0] + shapes[t][1]) for t in method.targets)
    if name == "miss":
        return L * sum(method.r * shapes[t][0] for t in method.targets)
    if name == "lisa":
        per_block = (spec.n_params - 2 * spec.vocab_size * C) / max(L, 1)
        return int(min(method.lisa_r, L) * per_block + 2 * spec.vocab_size * C)
    raise ValueError(f"unknown method {name!r}")


def estimate(spec: ModelSpec, config, n_gpus: int = 1, device: str = "cuda") -> VramBreakdown:
    """What a training step keeps in memory on `device`: "cuda" (the GPU's share), or "cpu" (a
    CPU run's RAM: the same parts without the CUDA context)."""
    k = CALIBRATION
    method, data, hw = config.method, config.data, config.hardware
    # Infctx (data.chunk_ctx): activations, logits and kernel checkpoints exist for one chunk at a time.
    live_ctx = data.chunk_ctx if 0 < data.chunk_ctx < data.ctx_len else data.ctx_len
    tokens = live_ctx * data.micro_bsz
    weight_bytes = 4.0 if hw.precision in ("fp32", "tf32") else 2.0
    trainable = trainable_parameter_count(spec, method)
    parts: dict[str, float] = {"CUDA context": k["cuda_context_bytes"] if device == "cuda" else 0.0}

    if method_info(method.name).trains_base_weights:  # no quantization: frozen weights keep their dtype
        frozen = spec.n_params - trainable
        parts["frozen weights"] = frozen * weight_bytes
    else:
        linear = linear_parameter_count(spec)
        per_linear = {"none": weight_bytes, "int8": k["int8_bytes_per_weight"],
                      "nf4": k["nf4_bytes_per_weight"]}[method.quant]
        parts["frozen weights"] = (spec.n_params - linear) * weight_bytes + linear * per_linear

    optimizer_share = 1.0
    if hw.strategy.startswith("deepspeed_stage") and n_gpus > 1:
        optimizer_share = 1.0 / n_gpus  # ZeRO shards optimizer states (and more from stage 2)
    if hw.strategy.endswith("offload") and device == "cuda":
        optimizer_share = 0.0  # moments and master weights live in CPU RAM
    parts["trainable (weights, grads)"] = trainable * 8.0
    parts["optimizer (Adam moments)"] = trainable * (k["bytes_per_trainable"] - 8.0) * optimizer_share

    C, L = spec.n_embd, spec.n_layer
    if hw.grad_cp:
        # Each block's input is kept; one block at a time is recomputed with its full activations.
        activations = L * tokens * C * 2 + tokens * C * 2 * k["activation_factor_no_cp"]
    else:
        activations = L * tokens * C * 2 * k["activation_factor_no_cp"]
    parts["activations"] = activations
    parts["logits"] = tokens * spec.vocab_size * k["logit_bytes_per_entry"]
    chunks = -(-live_ctx // 16)  # the CUDA/Triton kernels keep the fp32 state every 16 steps
    wkv_state = data.micro_bsz * spec.n_head * spec.head_size**2 * 4
    parts["WKV state checkpoints"] = chunks * wkv_state * (1 if hw.grad_cp else L)
    if live_ctx < data.ctx_len:  # every chunk boundary keeps each layer's WKV and token-shift states
        boundaries = -(-data.ctx_len // live_ctx)
        parts["carried states"] = boundaries * L * (wkv_state + data.micro_bsz * 2 * C * weight_bytes)
    parts["allocator margin"] = sum(parts.values()) * k["fragmentation"]
    return VramBreakdown(parts)


def fitting_chunk_ctx(spec: ModelSpec, config, free_bytes: float, device: str = "cuda") -> int:
    """The largest chunk_ctx (a power of two from 64, dividing ctx_len, below it) with which the run
    fits `free_bytes`; 0 when none does. Larger chunks run faster, so the largest fitting wins."""
    ctx_len = config.data.ctx_len
    hw = config.hardware
    candidates = [c for c in (8192, 4096, 2048, 1024, 512, 256, 128, 64) if c < ctx_len and ctx_len % c == 0]
    for chunk in candidates:
        chunked = replace(config, data=replace(config.data, chunk_ctx=chunk))
        if estimate(spec, chunked, hw.devices * hw.num_nodes, device).total <= free_bytes:
            return chunk
    return 0


def offloaded_bytes(spec: ModelSpec, config) -> float:
    """CPU RAM that an offloading DeepSpeed strategy fills with the Adam moments (0 otherwise)."""
    if not config.hardware.strategy.endswith("offload"):
        return 0.0
    trainable = trainable_parameter_count(spec, config.method)
    return trainable * (CALIBRATION["bytes_per_trainable"] - 8.0)


def largest_micro_bsz(spec: ModelSpec, config, free_bytes: float, device: str = "cuda") -> int:
    """The largest micro_bsz whose estimate fits `free_bytes` (0 when not even 1 fits). Every part
    grows linearly with micro_bsz, so two estimates give the line."""
    hw = config.hardware
    n_gpus = hw.devices * hw.num_nodes

    def total(micro_bsz: int) -> float:
        return estimate(spec, replace(config, data=replace(config.data, micro_bsz=micro_bsz)), n_gpus, device).total

    one, per_sample = total(1), total(2) - total(1)
    if one > free_bytes:
        return 0
    return 1 + int((free_bytes - one) // per_sample) if per_sample > 0 else config.data.micro_bsz


def render_table(breakdown: VramBreakdown) -> str:
    width = max(len(name) for name, _ in breakdown.rows())
    lines = [f"{name:<{width}}  {gb:7.2f} GB" for name, gb in breakdown.rows()]
    lines.append(f"{'total':<{width}}  {breakdown.total / GB:7.2f} GB")
    return "\n".join(lines)
