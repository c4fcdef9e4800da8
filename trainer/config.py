"""RunConfig: the one typed config that flows wizard -> preset -> trainer.

Every field carries its help text (the wizard shows it) and, where it has one, its list of
choices. Method-dependent defaults (learning rates, warm-up, ctx_len…) live in
`METHOD_DEFAULTS` and nowhere else. Presets are TOML holding only what differs from the
method's defaults; loading merges them back onto those defaults. `validate` returns every
problem at once, each naming the field and the fix.
"""

from __future__ import annotations

import copy
import difflib
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rwkv_tui.trainer.atomic import atomic_write_text
from rwkv_tui.trainer.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METHODS = ("full", "lora", "pissa", "miss", "lisa", "state")
QUANTS = ("none", "int8", "nf4")
LORA_TARGETS = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
# RWKV-6 and 5 have two more linear maps: the time mix's output gate and the channel mix's gate.
GATED_TARGETS = ("att.gate", "ffn.receptance")
PRECISIONS = ("bf16", "fp16", "fp32", "tf32")
# Tensor dtypes as settings and commands spell them -> torch's attribute names (no torch import here).
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
STRATEGIES = ("auto", "ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
              "deepspeed_stage_3", "deepspeed_stage_3_offload")
OPS = ("auto", "torch", "cuda", "triton", "triton_chunked", "fla")
# The GPU kernels' head sizes (kernels/wkv7_cuda.py, wkv7_triton.py, chunk_state_pass.py; a test keeps them equal),
# here so that checking a config never imports torch.
KERNEL_HEAD_SIZES = {"cuda": (16, 32, 64), "triton": (16, 32, 64, 128), "triton_chunked": (16, 32, 64)}


def _f(default, help: str, choices: tuple | None = None):
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    path: str = _f("", "The base model: an official RWKV .pth checkpoint. Its version, layers and width "
                       "are read from the file.")


@dataclass
class MethodConfig:
    name: str = _f("lora", "How to fine-tune: full (every weight), lora (small low-rank adapters), pissa "
                           "(LoRA started from the principal components), miss (block-shared adapter), lisa "
                           "(a few random layers at a time), state (only the initial RNN state).", METHODS)
    r: int = _f(32, "Adapter rank (LoRA/PiSSA) or block size (MiSS). Higher learns more and costs more "
                    "memory; 32 or 64 is usually enough.")
    alpha: float = _f(64.0, "LoRA scaling numerator: the adapter is scaled by alpha / r. The seeds "
                            "recommend alpha = 2 × r.")
    dropout: float = _f(0.01, "Dropout on the adapter branch (LoRA). 0.01 is recommended.")
    targets: list[str] = _f(list(LORA_TARGETS), "Which linear maps get an adapter (LoRA, PiSSA, MiSS). "
                                                "att.gate and ffn.receptance exist in RWKV-6/5 only.",
                            LORA_TARGETS + GATED_TARGETS)
    train_extras: bool = _f(False, "Also train LayerNorms and the time-mix vectors, saved as full copies "
                                   "in the adapter file (as RWKV-PEFT does).")
    svd_niter: int = _f(4, "PiSSA: power iterations of the fast randomized SVD; 0 uses the exact SVD "
                           "(slow on big models).")
    lisa_r: int = _f(2, "LISA: how many layers are trained at a time.")
    lisa_k: int = _f(100, "LISA: redraw the trained layers every k steps.")
    init_from: str = _f("", "Start from an existing adapter or state file (ours or RWKV-PEFT's) instead of "
                            "fresh adapters; empty starts fresh.")
    quant: str = _f("none", "Store the frozen base weights in int8 or nf4 (QLoRA, QPiSSA, quantized state "
                            "tuning) to save VRAM; needs bitsandbytes. int8 loses less accuracy.", QUANTS)


@dataclass
class DataConfig:
    path: str = _f("", "Training data: a .jsonl file (one {\"text\": …} per line) or a binidx prefix "
                       "(path without .bin/.idx).")
    data_type: str = _f("auto", "auto detects jsonl vs binidx from the path.", ("auto", "jsonl", "binidx"))
    ctx_len: int = _f(1024, "Tokens per training sample. Longer costs more memory; match it to your data.")
    loading: str = _f("pad", "pad: one document per sample (padded or cut to ctx_len); pack: several "
                             "documents per sample; random: random windows over the token stream.",
                      ("random", "pad", "pack"))
    loss_mask: str = _f("sft", "sft: learn only the Assistant/Response parts of chat and instruction "
                               "samples; none: learn every token.", ("none", "sft"))
    micro_bsz: int = _f(1, "Samples per GPU per step. Start at 1 and raise it while memory allows.")
    accumulate_grad_batches: int = _f(1, "Micro-batches summed before each optimizer step "
                                         "(a larger effective batch without more memory).")


@dataclass
class EpochConfig:
    epoch_steps: int = _f(1000, "Optimizer steps per epoch (an RWKV 'epoch' is a fixed number of steps, "
                                "not a pass over the data).")
    epoch_count: int = _f(1, "How many epochs to train.")
    epoch_save: int = _f(1, "Save a checkpoint every N epochs (mind the disk space for full fine-tunes).")
    epoch_begin: int = _f(0, "Number of the first epoch (to continue an earlier numbering).")


@dataclass
class OptimConfig:
    lr_init: float = _f(2e-5, "Learning rate at the start (after warm-up). Fine-tuning: ≤ 1e-4; "
                              "state tuning: 1.")
    lr_final: float = _f(2e-5, "Learning rate at the end of the schedule.")
    warmup_steps: int = _f(0, "Steps to ramp the learning rate up from 1% of lr_init.")
    beta1: float = _f(0.9, "Adam beta1.")
    beta2: float = _f(0.99, "Adam beta2 (0.999 near convergence).")
    adam_eps: float = _f(1e-8, "Adam epsilon.")
    weight_decay: float = _f(0.0, "Weight decay on matrices (0 is usual for fine-tuning).")
    grad_clip: float = _f(1.0, "Clip the gradient norm to this value; 0 turns clipping off.")
    schedule: str = _f("cos_decay", "cos_decay: cosine from lr_init to lr_final; wsd: hold lr_init, decay "
                                    "in the last 10% of steps.", ("cos_decay", "wsd"))


@dataclass
class HardwareConfig:
    accelerator: str = _f("auto", "auto uses the GPU when there is one.", ("auto", "gpu", "cpu"))
    devices: int = _f(1, "Number of GPUs.")
    num_nodes: int = _f(1, "Number of machines.")
    precision: str = _f("bf16", "Training precision; bf16 is recommended on GPUs that support it.",
                        PRECISIONS)
    strategy: str = _f("auto", "auto, ddp or DeepSpeed (stage 1 is recommended for fine-tuning; 2/3 and "
                               "offload save more memory, slower).", STRATEGIES)
    grad_cp: bool = _f(True, "Gradient checkpointing: recompute activations in the backward pass; "
                             "slower, much less memory.")
    op: str = _f("auto", "WKV kernel: auto times the available ones on the GPU and keeps the fastest; cuda is "
                         "built on first use (needs nvcc), fla needs rwkv-fla; `rwkv-tui kernels` lists them.", OPS)


@dataclass
class OutputConfig:
    proj_dir: str = _f("runs", "Folder that holds run folders.")
    seed: int = _f(42, "Random seed (data order, adapters' initialisation, LISA's layers).")
    wandb: str = _f("", "Weights & Biases project name; empty turns it off.")
    save_dtype: str = _f("bf16", "dtype of saved models and adapters.", tuple(DTYPE_NAMES))


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: EpochConfig = field(default_factory=EpochConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def for_method(cls, name: str, **overrides: Any) -> "RunConfig":
        """Defaults for a method (seeds' recommendations), then `section__field=value` overrides."""
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}", field="method.name",
                              hint=f"choose one of: {', '.join(METHODS)}")
        config = cls()
        config.method.name = name
        for dotted, value in METHOD_DEFAULTS[name].items():
            set_field(config, dotted, value)
        for key, value in overrides.items():
            set_field(config, key.replace("__", "."), value)
        return config


# The seeds' recommendations per method (tutorials 000, 001, 003): the only copy.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"optim.lr_init": 1e-5, "optim.lr_final": 1e-5, "optim.beta2": 0.999},
    "lora": {"optim.lr_init": 2e-5, "optim.lr_final": 2e-5},
    "pissa": {"optim.lr_init": 2e-5, "optim.lr_final": 2e-5},
    "miss": {"optim.lr_init": 2e-5, "optim.lr_final": 2e-5},
    "lisa": {"optim.lr_init": 1e-5, "optim.lr_final": 1e-5},
    "state": {"optim.lr_init": 1.0, "optim.lr_final": 0.01, "optim.warmup_steps": 10, "data.ctx_len": 512},
}

SECTIONS = tuple(f.name for f in fields(RunConfig))


# ---------------------------------------------------------------------------- field metadata


def iter_fields() -> list[tuple[str, Any]]:
    """Every leaf field as (dotted name, dataclasses.Field), in declaration order."""
    out = []
    for section in fields(RunConfig):
        for leaf in fields(section.default_factory):
            out.append((f"{section.name}.{leaf.name}", leaf))
    return out


_FIELDS = dict(iter_fields())


def _field(dotted: str):
    try:
        return _FIELDS[dotted]
    except KeyError:
        raise ConfigError(f"unknown setting {dotted!r}", field=dotted, hint=_suggest(dotted)) from None


def field_help(dotted: str) -> str:
    return _field(dotted).metadata["help"]


def field_choices(dotted: str) -> tuple | None:
    return _field(dotted).metadata["choices"]


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(_FIELDS), n=1, cutoff=0.5)
    if not close:  # a bare field name such as "lr_init"
        close = [k for k in _FIELDS if k.endswith("." + name.rsplit(".", 1)[-1])][:1]
    return f"did you mean {close[0]!r}?" if close else "see `rwkv-tui presets show` for every setting"


def get_field(config: RunConfig, dotted: str):
    section, name = dotted.split(".", 1)
    return getattr(getattr(config, section), name)


def set_field(config: RunConfig, dotted: str, value: Any) -> None:
    _field(dotted)
    section, name = dotted.split(".", 1)
    setattr(getattr(config, section), name, value)


def _leaf_default(leaf) -> Any:
    return leaf.default_factory() if leaf.default is MISSING else leaf.default


# ---------------------------------------------------------------------------- dicts and TOML


def config_to_dict(config: RunConfig, only_changes: bool = False) -> dict[str, dict[str, Any]]:
    """Nested dict; with `only_changes`, just what differs from the method's defaults
    (plus `method.name`, which says which defaults apply)."""
    data = asdict(config)
    if not only_changes:
        return data
    base = asdict(RunConfig.for_method(config.method.name))
    out: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        changed = {k: v for k, v in values.items() if v != base[section][k]}
        if changed:
            out[section] = changed
    out.setdefault("method", {})["name"] = config.method.name
    return out


def config_from_dict(data: dict[str, Any], source: str | Path | None = None) -> RunConfig:
    """Merge a (possibly partial) nested dict onto the defaults of its method."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a table of sections", path=source)
    unknown = [s for s in data if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]", path=source, field=unknown[0],
                          hint=_suggest_section(unknown[0]))
    method = data.get("method", {}).get("name", "lora")
    config = RunConfig.for_method(method) if method in METHODS else RunConfig()
    problems = []
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table", path=source, field=section)
        for name, value in values.items():
            dotted = f"{section}.{name}"
            if dotted not in _FIELDS:
                raise ConfigError(f"unknown setting {dotted!r}", path=source, field=dotted, hint=_suggest(dotted))
            try:
                set_field(config, dotted, coerce_value(dotted, value))
            except ConfigError as exc:
                exc.path = str(source) if source else None
                problems.append(exc)
    if problems:
        raise problems[0]
    return config


def _suggest_section(name: str) -> str:
    close = difflib.get_close_matches(name, SECTIONS, n=1)
    return f"did you mean [{close[0]}]?" if close else f"sections are: {', '.join(SECTIONS)}"


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path,
                          hint="list presets with `rwkv-tui presets list`") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    data.pop("preset", None)  # a preset's own name/description, not a setting
    return config_from_dict(data, source=path)


def dumps_config(config: RunConfig, only_changes: bool = True, header: dict | None = None) -> str:
    import tomli_w

    data = config_to_dict(config, only_changes=only_changes)
    if header:
        data = {"preset": header, **data}
    return tomli_w.dumps(data)


def save_config(config: RunConfig, path: str | Path, only_changes: bool = True,
                header: dict | None = None) -> Path:
    """Write TOML atomically; presets keep only what differs from the method's defaults."""
    path = Path(path)
    atomic_write_text(path, dumps_config(config, only_changes=only_changes, header=header))
    return path


# ---------------------------------------------------------------------------- --set key=value

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce_value(dotted: str, value: Any) -> Any:
    """Check and convert a value (from TOML or a command line) to the field's type."""
    leaf = _field(dotted)
    default = _leaf_default(leaf)
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError
                value = lowered in _TRUE
            elif not isinstance(value, bool):
                raise ValueError
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif kind is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError
            value = list(value)
        else:
            if not isinstance(value, str):
                raise ValueError
    except (ValueError, TypeError):
        raise ConfigError(f"{value!r} is not a valid {kind.__name__}", field=dotted,
                          hint=f"e.g. {dotted}={default!r}") from None
    choices = leaf.metadata["choices"]
    if choices:
        bad = [v for v in (value if isinstance(value, list) else [value]) if v not in choices]
        if bad:
            raise ConfigError(f"{bad[0]!r} is not a valid choice", field=dotted,
                              hint=f"choose from: {', '.join(choices)}")
    return value


def apply_overrides(config: RunConfig, assignments: list[str]) -> RunConfig:
    """Return a copy with `section.field=value` assignments applied.

    Changing `method.name` re-bases the method-dependent defaults: settings that were at
    the old method's defaults take the new method's, settings changed by hand are kept.
    """
    parsed: list[tuple[str, str]] = []
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", hint="e.g. --set optim.lr_init=1e-4")
        key, value = item.split("=", 1)
        key = key.strip()
        _field(key)
        parsed.append((key, value.strip()))
    new = copy.deepcopy(config)
    for key, value in parsed:
        if key == "method.name":
            changes = config_to_dict(new, only_changes=True)
            changes["method"]["name"] = coerce_value(key, value)
            new = config_from_dict(changes)
    for key, value in parsed:
        if key != "method.name":
            set_field(new, key, coerce_value(key, value))
    return new


# ---------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ConfigProblem:
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} — {self.fix}"


def validate(config: RunConfig, spec=None, *, cuda_available: bool | None = None,
             cuda_devices: int | None = None, data_tokens: int | None = None,
             bitsandbytes_available: bool | None = None) -> list[ConfigProblem]:
    """Every problem at once. `spec` (the model), CUDA and data facts enable the checks that
    need them; None means "unknown", and those checks are skipped."""
    problems: list[ConfigProblem] = []

    def problem(dotted: str, message: str, fix: str) -> None:
        problems.append(ConfigProblem(dotted, message, fix))

    for dotted, leaf in iter_fields():  # types and choices (a config edited by hand may be wrong)
        try:
            coerce_value(dotted, get_field(config, dotted))
        except ConfigError as exc:
            problem(dotted, exc.message, exc.hint or "")
    m, d, e, o, hw = config.method, config.data, config.epochs, config.optim, config.hardware

    if not config.model.path:
        problem("model.path", "no base model chosen", "pick an RWKV .pth checkpoint")
    if not d.path:
        problem("data.path", "no training data chosen", "pick a .jsonl file or a binidx prefix")
    for dotted, value, low in [("method.r", m.r, 1), ("data.ctx_len", d.ctx_len, 1), ("data.micro_bsz", d.micro_bsz, 1),
                               ("data.accumulate_grad_batches", d.accumulate_grad_batches, 1),
                               ("epochs.epoch_steps", e.epoch_steps, 1), ("epochs.epoch_count", e.epoch_count, 1),
                               ("epochs.epoch_save", e.epoch_save, 1), ("hardware.devices", hw.devices, 1),
                               ("hardware.num_nodes", hw.num_nodes, 1), ("method.lisa_r", m.lisa_r, 1),
                               ("method.lisa_k", m.lisa_k, 1)]:
        if isinstance(value, int) and value < low:
            problem(dotted, f"must be at least {low}, got {value}", f"set {dotted} to {low} or more")
    for dotted, value in [("optim.lr_init", o.lr_init), ("optim.lr_final", o.lr_final),
                          ("optim.adam_eps", o.adam_eps)]:
        if isinstance(value, float) and not value > 0:
            problem(dotted, f"must be positive, got {value}", "e.g. 2e-5 for LoRA, 1 for state tuning")
    if isinstance(o.lr_final, float) and isinstance(o.lr_init, float) and o.lr_final > o.lr_init:
        problem("optim.lr_final", "is larger than lr_init", "the schedule decays: set lr_final ≤ lr_init")
    for dotted, value in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2), ("method.dropout", m.dropout)]:
        if isinstance(value, float) and not 0 <= value < 1:
            problem(dotted, f"must be in [0, 1), got {value}", "e.g. 0.9 / 0.99 for betas, 0.01 for dropout")
    if o.warmup_steps < 0 or o.weight_decay < 0 or o.grad_clip < 0:
        problem("optim", "warmup_steps, weight_decay and grad_clip cannot be negative", "use 0 to turn them off")
    if m.name in ("lora", "pissa", "miss") and not m.targets:
        problem("method.targets", f"{m.name} needs at least one target matrix", "e.g. att.key,att.value")

    # Combinations that would fail mid-run.
    if m.quant != "none" and m.name in ("full", "lisa"):
        problem("method.quant", f"{m.name} trains the base weights, which cannot be quantized",
                "use quant=none, or LoRA/PiSSA/state tuning for int8/nf4")
    if m.quant != "none" and bitsandbytes_available is False:
        problem("method.quant", f"{m.quant} needs the bitsandbytes package",
                "pip install 'rwkv-tui[gpu]' (or bitsandbytes), or set quant=none")
    uses_gpu_strategy = hw.strategy.startswith("deepspeed") or hw.strategy == "ddp"
    if cuda_available is False:
        if hw.accelerator == "gpu":
            problem("hardware.accelerator", "no CUDA GPU was found", "set accelerator=cpu (slow) or auto")
        if uses_gpu_strategy:
            problem("hardware.strategy", f"{hw.strategy} needs CUDA GPUs", "use strategy=auto on this machine")
        if hw.op in ("cuda", "triton", "fla"):
            problem("hardware.op", f"the {hw.op} kernel needs a CUDA GPU", "use op=auto")
        if hw.precision == "fp16":
            problem("hardware.precision", "fp16 training needs a CUDA GPU", "use fp32 (or bf16) on CPU")
    if cuda_devices is not None and hw.devices > max(cuda_devices, 1) and hw.accelerator != "cpu":
        problem("hardware.devices", f"{hw.devices} GPUs asked for, {cuda_devices} found",
                f"set devices={max(cuda_devices, 1)}")
    if m.name == "state" and hw.precision == "fp16":
        problem("hardware.precision", "state tuning's learning rate (~1) overflows fp16", "use bf16 or fp32")
    if d.loading == "random" and d.loss_mask == "sft":
        problem("data.loss_mask", "random windows cut across samples, so roles cannot be masked",
                "use loading=pad or pack with sft masking, or loss_mask=none")

    if spec is not None:
        sizes = KERNEL_HEAD_SIZES.get(hw.op)
        if sizes and spec.head_size not in sizes:
            problem("hardware.op", f"the {hw.op} kernel supports head sizes {', '.join(map(str, sizes))}, "
                                   f"the model has {spec.head_size}", "use op=auto")
        if m.name == "lisa" and m.lisa_r > spec.n_layer:
            problem("method.lisa_r", f"the model has only {spec.n_layer} layers", f"set lisa_r ≤ {spec.n_layer}")
        if m.name == "miss" and (spec.n_embd % m.r or spec.dim_ffn % m.r):
            problem("method.r", f"MiSS needs r to divide n_embd ({spec.n_embd}) and the ffn width "
                                f"({spec.dim_ffn})", "use a power of two such as 16, 32 or 64")
        if m.name in ("lora", "pissa") and m.r > spec.n_embd:
            problem("method.r", f"rank {m.r} exceeds the model width {spec.n_embd}", "use a rank ≤ n_embd")
    if data_tokens is not None and d.loading == "random" and data_tokens <= d.ctx_len:
        problem("data.ctx_len", f"the data has only {data_tokens} tokens, not more than ctx_len={d.ctx_len}",
                "lower ctx_len, add data, or use loading=pad")
    return problems


def ensure_valid(config: RunConfig, spec=None, **facts) -> None:
    """Raise one ConfigError listing every problem (for the CLI and the trainer)."""
    problems = validate(config, spec, **facts)
    if problems:
        listing = "\n  ".join(str(p) for p in problems)
        raise ConfigError(f"{len(problems)} problem(s) in the run settings:\n  {listing}",
                          field=problems[0].field)
