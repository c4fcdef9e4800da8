"""RunConfig: the one typed config that flows wizard -> preset -> trainer.

Every field carries its help text (the wizard shows it) and, where it has one, its list of
choices. Method-dependent defaults (learning rates, warm-up, ctx_len…) live in
`METHOD_DEFAULTS` and nowhere else. Presets are TOML holding only what differs from the
method's defaults; loading merges them back onto those defaults. Loading (`config_from_dict`)
and `validate` (one check per section, then the rules joining sections) report every problem
at once, each naming the field and the fix.
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
from rwkv_tui.trainer.hardware import MemoryBudget
from rwkv_tui.trainer.peft.catalog import METHOD_INFO
from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METHODS = tuple(METHOD_INFO)  # full, lora, pissa, miss, lisa, state
QUANTS = ("none", "int8", "nf4")
LORA_TARGETS = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
# RWKV-6 and 5 have two more linear maps: the time mix's output gate and the channel mix's gate.
GATED_TARGETS = ("att.gate", "ffn.receptance")
PRECISIONS = ("bf16", "fp16", "fp32", "tf32")
# Tensor dtypes as settings and commands spell them -> torch's attribute names (no torch import here).
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
STRATEGIES = ("auto", "ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
              "deepspeed_stage_3", "deepspeed_stage_3_offload")
TRACKERS = ("tensorboard", "swanlab", "mlflow", "wandb")
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


# Record files the engine reads and converts to text (a binidx prefix is anything else);
# a folder saved by `datasets.Dataset.save_to_disk` is one too (see `is_records_path`).
RECORD_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".arrow")
DATASETS_FOLDER_MARKERS = ("dataset_info.json", "state.json")
MAX_SOURCE_REPEAT = 10_000


def is_records_path(path: str | Path) -> bool:
    """A file of records (jsonl, json, parquet, csv, tsv, arrow) or a `datasets` folder, by name
    and, for a folder, by the files `save_to_disk` leaves in it; not a binidx prefix."""
    path = Path(path)
    if path.suffix.lower() in RECORD_SUFFIXES:
        return True
    return path.is_dir() and any((path / marker).is_file() for marker in DATASETS_FOLDER_MARKERS)


@dataclass
class DataSource:
    """One training file of several, and how many copies of it the data holds (the wiki's
    "repeat your data, add general data")."""

    path: str = ""
    repeat: int = 1


@dataclass
class DataConfig:
    path: str | list[str] = _f("", "Training data: a record file (.jsonl, .json, .parquet, .csv, .tsv, "
                                   ".arrow, or a `datasets` folder), a list of them, or a binidx prefix "
                                   "(path without .bin/.idx).")
    sources: list[DataSource] = _f([], "More training files, each with its own repeat count: "
                                       "[[data.sources]] tables with path = \"…\" and repeat = N. "
                                       "They are trained together with data.path.")
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
    val_path: str = _f("", "Validation data: a record file (any format data.path accepts) held apart from "
                           "training; empty: none, or see val_fraction.")
    val_fraction: float = _f(0.0, "Hold out this share of the training documents for validation (whole "
                                  "documents, before repeats, chosen by the seed; e.g. 0.05). 0: none.")
    val_every: int = _f(100, "Evaluate the validation data every N optimizer steps (and at step 0 and the end), "
                             "when val_path or val_fraction is set.")
    val_max_tokens: int = _f(16384, "Score at most this many tokens of the validation data each time (whole "
                                    "documents, in file order), so validation stays a few percent of training "
                                    "time; 0: all of it.")
    chunk_ctx: int = _f(0, "Infctx: train each ctx_len sample as consecutive chunks of this many tokens, "
                           "carrying the RNN state (with its gradients) from chunk to chunk, so memory follows "
                           "chunk_ctx, not ctx_len. ctx_len must be a multiple of it (no shorter last chunk); "
                           "one device only. 0: off.")

    def all_sources(self) -> list[DataSource]:
        """Every training file with its repeat: data.path's (once each), then [[data.sources]]."""
        paths = [self.path] if isinstance(self.path, str) else list(self.path)
        return [DataSource(p, 1) for p in paths if p] + list(self.sources)

    def is_single_file(self) -> bool:
        """One file read once: trained exactly as before sources existed (its own token cache)."""
        sources = self.all_sources()
        return len(sources) == 1 and sources[0].repeat == 1


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
    proj_dir: str = _f(DEFAULT_RUNS_ROOT, "Folder that holds run folders.")
    seed: int = _f(42, "Random seed (data order, adapters' initialisation, LISA's layers).")
    wandb: str = _f("", "Weights & Biases project name; empty turns it off.")
    trackers: list[str] = _f([], "Experiment trackers that also receive the losses: tensorboard (offline "
                                 "event files), swanlab (local mode), mlflow (a file store in the run "
                                 "folder), wandb (project from output.wandb). Each is an optional extra.",
                             TRACKERS)
    save_every_steps: int = _f(0, "Also save a checkpoint every N optimizer steps (0: only per epoch).")
    keep_last: int = _f(0, "Keep only the N newest step/epoch checkpoints (0 keeps all).")
    keep_best: bool = _f(False, "Keep best-<method>.pth, the weights with the lowest validation loss.")
    sample_prompts: list[str] = _f([], "Prompts answered with the run's weights while it trains (fixed "
                                       "seed), to see what it learns.")
    sample_every: int = _f(100, "Generate the sample_prompts' answers every N optimizer steps (and at step 0 "
                                "and the end).")
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


# ---------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class ConfigProblem:
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} — {self.fix}"


def _problem_from(error: ConfigError) -> ConfigProblem:
    return ConfigProblem(error.field or "", error.message, error.hint or "")


def _listing(problems: list[ConfigProblem]) -> str:
    """A count, then one line per problem (how both loading and validation report several)."""
    lines = "\n  ".join(str(p) for p in problems)
    return f"{len(problems)} problem(s) in the run settings:\n  {lines}"


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
    """Merge a (possibly partial) nested dict onto the defaults of its method.

    Every unknown section or setting, wrong type and invalid choice is reported at once, in
    one ConfigError, so a hand-edited preset is fixed in one go."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a table of sections", path=source)
    config = RunConfig.for_method(_method_of(data))
    problems = _section_problems(data) + _merge_settings(config, data)
    if problems:
        raise _settings_error(problems, source)
    return config


def _method_of(data: dict[str, Any]) -> str:
    """The method whose defaults the dict is merged onto. A missing or invalid name gives the
    default method; an invalid one is then reported with the other settings."""
    method = data.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    return name if name in METHODS else MethodConfig.name


def _section_problems(data: dict[str, Any]) -> list[ConfigProblem]:
    """Top-level keys that are not sections, and sections that are not tables."""
    problems = []
    for section, values in data.items():
        if section not in SECTIONS:
            problems.append(ConfigProblem(str(section), f"unknown section [{section}]",
                                          _suggest_section(str(section))))
        elif not isinstance(values, dict):
            problems.append(ConfigProblem(section, f"[{section}] must be a table",
                                          f"put its settings under a [{section}] header"))
    return problems


def _merge_settings(config: RunConfig, data: dict[str, Any]) -> list[ConfigProblem]:
    """Set each setting of the dict's sections on `config`; return those that are unknown or invalid."""
    problems = []
    for section, values in data.items():
        if section not in SECTIONS or not isinstance(values, dict):
            continue  # reported by _section_problems
        for name, value in values.items():
            dotted = f"{section}.{name}"
            try:
                set_field(config, dotted, coerce_value(dotted, value))
            except ConfigError as exc:
                problems.append(_problem_from(exc))
    return problems


def _settings_error(problems: list[ConfigProblem], source: str | Path | None) -> ConfigError:
    """A single problem keeps its own message, field and hint; several are listed, each with its fix."""
    if len(problems) == 1:
        only = problems[0]
        return ConfigError(only.message, path=source, field=only.field, hint=only.fix or None)
    return ConfigError(_listing(problems), path=source)


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
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory", hint="give a preset name or a .toml file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})",
                          hint="a config is a TOML text file; save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    if not data:  # nothing but blanks or comments: every default, and no model or data to train
        raise ConfigError(f"config file {path} is empty",
                          hint="fill it in the wizard (`rwkv-tui`) or start from `rwkv-tui presets show lora`")
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
    if dotted in _SPECIAL_COERCIONS:  # fields whose type is not their default's
        return _SPECIAL_COERCIONS[dotted](dotted, value)
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
            if isinstance(value, str) and value.strip().startswith("["):
                import json  # a JSON list: items may hold commas (the wizard's headless command for sample prompts)

                value = json.loads(value)
            elif isinstance(value, str):
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
class ValidationFacts:
    """What is known beyond the config. None means unknown: the checks needing it are skipped."""
    spec: Any = None  # the base model's ModelSpec
    cuda_available: bool | None = None
    cuda_devices: int | None = None
    data_tokens: int | None = None
    bitsandbytes_available: bool | None = None
    memory: MemoryBudget | None = None  # free memory on the chosen device, and the RAM


# Ceilings on counts: past them a run cannot fit or never finishes a step (micro_bsz=1e9 was
# OOM-killed at 23.5 GB, accumulate_grad_batches=1e9 hung in its first step).
UPPER_BOUNDS: dict[str, int] = {
    "method.r": 65536, "method.svd_niter": 100, "method.lisa_r": 4096, "method.lisa_k": 10**8,
    "data.ctx_len": 1 << 20, "data.micro_bsz": 4096, "data.accumulate_grad_batches": 1024,
    "epochs.epoch_steps": 10**8, "epochs.epoch_count": 10**6, "epochs.epoch_save": 10**6,
    "epochs.epoch_begin": 10**6, "optim.warmup_steps": 10**8,
    "hardware.devices": 1024, "hardware.num_nodes": 4096,
    "data.val_every": 10**8, "data.val_max_tokens": 10**12, "output.save_every_steps": 10**8,
    "output.keep_last": 10**6,
    "output.sample_every": 10**8,
}


def validate(config: RunConfig, spec=None, *, cuda_available: bool | None = None,
             cuda_devices: int | None = None, data_tokens: int | None = None,
             bitsandbytes_available: bool | None = None, memory: MemoryBudget | None = None) -> list[ConfigProblem]:
    """Every problem at once. `spec` (the model), CUDA, data and memory facts enable the checks
    that need them; None means "unknown", and those checks are skipped."""
    facts = ValidationFacts(spec, cuda_available, cuda_devices, data_tokens, bitsandbytes_available, memory)
    return [problem for check in SECTION_CHECKS for problem in check(config, facts)]


def field_type_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    """Types and choices of every field (a config edited by hand or in code may hold anything)."""
    problems = []
    for dotted, _ in iter_fields():
        try:
            coerce_value(dotted, get_field(config, dotted))
        except ConfigError as exc:
            problems.append(_problem_from(exc))
    return problems


def model_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    if not config.model.path:
        return [ConfigProblem("model.path", "no base model chosen", "pick an RWKV .pth checkpoint")]
    return []


def method_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    m = config.method
    problems = _below_one(config, ("method.r", "method.lisa_r", "method.lisa_k"))
    problems += _too_large(config, "method")
    problems += _outside_fraction(config, ("method.dropout",))
    if m.name in ("lora", "pissa", "miss") and not m.targets:
        problems.append(ConfigProblem("method.targets", f"{m.name} needs at least one target matrix",
                                      "e.g. att.key,att.value"))
    problems += _quantization_problems(config, facts)
    if facts.spec is not None:
        problems += _method_model_problems(config, facts.spec)
    return problems


def _quantization_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    m = config.method
    problems = []
    if m.quant != "none" and m.name in METHOD_INFO and not METHOD_INFO[m.name].supports_quantization:
        problems.append(ConfigProblem("method.quant", f"{m.name} trains the base weights, which cannot be quantized",
                                      "use quant=none, or LoRA/PiSSA/state tuning for int8/nf4"))
    if m.quant != "none" and facts.bitsandbytes_available is False:
        problems.append(ConfigProblem("method.quant", f"{m.quant} needs the bitsandbytes package",
                                      "pip install 'rwkv-tui[gpu]' (or bitsandbytes), or set quant=none"))
    return problems


def _method_model_problems(config: RunConfig, spec) -> list[ConfigProblem]:
    """Method settings the base model's shape cannot take."""
    m = config.method
    problems = []
    if m.name == "lisa" and m.lisa_r > spec.n_layer:
        problems.append(ConfigProblem("method.lisa_r", f"the model has only {spec.n_layer} layers",
                                      f"set lisa_r ≤ {spec.n_layer}"))
    if m.name == "miss" and (spec.n_embd % m.r or spec.dim_ffn % m.r):
        problems.append(ConfigProblem("method.r", f"MiSS needs r to divide n_embd ({spec.n_embd}) and the ffn "
                                                  f"width ({spec.dim_ffn})", "use a power of two such as 16, 32 or 64"))
    if m.name in ("lora", "pissa") and m.r > spec.n_embd:
        problems.append(ConfigProblem("method.r", f"rank {m.r} exceeds the model width {spec.n_embd}",
                                      "use a rank ≤ n_embd"))
    return problems


def data_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    d = config.data
    problems = []
    if not d.all_sources():
        problems.append(ConfigProblem("data.path", "no training data chosen", "pick a .jsonl file or a binidx prefix"))
    problems += _below_one(config, ("data.ctx_len", "data.micro_bsz", "data.accumulate_grad_batches", "data.val_every"))
    problems += _too_large(config, "data")
    problems += _data_type_problems(config) + _sources_problems(config)
    problems += _validation_split_problems(config) + chunk_ctx_problems(config)
    if isinstance(d.val_max_tokens, int) and d.val_max_tokens < 0:
        problems.append(ConfigProblem("data.val_max_tokens", f"must be 0 (all) or more, got {d.val_max_tokens}",
                                      "e.g. 16384, or 0 to score every validation document"))
    if d.loading == "random" and d.loss_mask == "sft":
        problems.append(ConfigProblem("data.loss_mask", "random windows cut across samples, so roles cannot be masked",
                                      "use loading=pad or pack with sft masking, or loss_mask=none"))
    tokens = facts.data_tokens
    if tokens is not None and d.loading == "random" and tokens <= d.ctx_len:
        problems.append(ConfigProblem("data.ctx_len", f"the data has only {tokens} tokens, not more than "
                                                      f"ctx_len={d.ctx_len}",
                                      "lower ctx_len, add data, or use loading=pad"))
    return problems


def chunk_ctx_problems(config: RunConfig) -> list[ConfigProblem]:
    """data.chunk_ctx (infctx): 0, or a divisor of ctx_len; one process (trainer/training/infctx.py
    calls the model past the DDP/DeepSpeed wrapper, which would then not reduce the gradients)."""
    d, hw = config.data, config.hardware
    chunk, ctx_len = d.chunk_ctx, d.ctx_len
    if not isinstance(chunk, int) or isinstance(chunk, bool) or not isinstance(ctx_len, int) or chunk == 0:
        return []  # a wrong type is reported when the value is loaded; 0 is off
    if chunk < 0:
        return [ConfigProblem("data.chunk_ctx", f"must be 0 (off) or more, got {chunk}", "e.g. 512 or 1024")]
    if chunk > ctx_len or ctx_len % chunk:
        divisors = [c for c in (4096, 2048, 1024, 512, 256, 128, 64) if c <= ctx_len and ctx_len % c == 0]
        fix = f"e.g. chunk_ctx={divisors[0]}" if divisors else "set chunk_ctx=0 (off)"
        return [ConfigProblem("data.chunk_ctx", f"ctx_len={ctx_len} must be a multiple of chunk_ctx={chunk}",
                              f"{fix}, or change ctx_len to a multiple of {chunk}")]
    if hw.devices != 1 or hw.num_nodes != 1 or hw.strategy != "auto":
        return [ConfigProblem("data.chunk_ctx", "chunked training (infctx) runs on one device with strategy=auto "
                                                f"(now: devices={hw.devices}, num_nodes={hw.num_nodes}, "
                                                f"strategy={hw.strategy})",
                              "set hardware.devices=1 and strategy=auto, or chunk_ctx=0")]
    return []


def _validation_split_problems(config: RunConfig) -> list[ConfigProblem]:
    """data.val_path / data.val_fraction: one of them, a record file, never the training data."""
    d = config.data
    fraction, val_path = d.val_fraction, d.val_path
    if not isinstance(fraction, float) or not isinstance(val_path, str):
        return []  # a wrong type is reported when the value is loaded
    problems = []
    if not 0 <= fraction < 1:
        problems.append(ConfigProblem("data.val_fraction", f"must be in [0, 1), got {fraction}",
                                      "e.g. 0.05 holds out 5% of the documents; 0 turns it off"))
    if val_path and fraction > 0:
        problems.append(ConfigProblem("data.val_fraction", "val_path and val_fraction are both set",
                                      "keep one: a validation file (val_path), or a share of the training "
                                      "documents (val_fraction)"))
    training = [s.path for s in d.all_sources() if isinstance(s.path, str)]
    if val_path and not is_records_path(val_path):
        problems.append(ConfigProblem("data.val_path", f"{val_path} is not a record file",
                                      "give a .jsonl, .json, .parquet, .csv, .tsv or .arrow file, or a `datasets` "
                                      "folder (e.g. the PREFIX.val.jsonl of `data prepare --val-fraction`)"))
    if val_path and any(Path(val_path).resolve() == Path(p).resolve() for p in training):
        problems.append(ConfigProblem("data.val_path", f"{val_path} is also the training data",
                                      "validate on documents the model does not train on: another file, or "
                                      "val_fraction instead"))
    if 0 < fraction < 1 and not all(is_records_path(p) for p in training):
        problems.append(ConfigProblem("data.val_fraction", "a binidx prefix holds tokens, not documents to hold out",
                                      "train from the record file with val_fraction, or run `rwkv-tui data prepare "
                                      "--val-fraction` and set data.val_path to its PREFIX.val.jsonl"))
    return problems


def _data_type_problems(config: RunConfig) -> list[ConfigProblem]:
    """A data_type a path contradicts: the file would be read in the wrong format."""
    d = config.data
    for source in d.all_sources():
        suffix = Path(source.path).suffix if isinstance(source.path, str) else ""
        if d.data_type == "jsonl" and suffix in (".bin", ".idx"):
            return [ConfigProblem("data.data_type", f"jsonl was chosen, but {source.path} is a binidx file",
                                  "set data_type=binidx (or auto), or point data.path at the .jsonl")]
        if d.data_type == "binidx" and suffix.lower() in RECORD_SUFFIXES:
            kind = "jsonl" if suffix == ".jsonl" else "record"
            return [ConfigProblem("data.data_type", f"binidx was chosen, but {source.path} is a {kind} file",
                                  "set data_type=jsonl (or auto), or point data.path at the binidx prefix")]
    return []


def _sources_problems(config: RunConfig) -> list[ConfigProblem]:
    """Several files are tokenized together, so each must be a record file; repeats are counts."""
    d = config.data
    problems = []
    for i, source in enumerate(d.sources):
        where = f"data.sources[{i}]"
        if not source.path:
            problems.append(ConfigProblem(f"{where}.path", "is empty", "give the file's path, or remove the table"))
        if not 1 <= source.repeat <= MAX_SOURCE_REPEAT:
            problems.append(ConfigProblem(f"{where}.repeat", f"must be 1 to {MAX_SOURCE_REPEAT:,}, got "
                                                             f"{source.repeat}", "repeat = 1 reads the file once"))
    if not d.is_single_file() and d.data_type == "binidx":
        problems.append(ConfigProblem("data.data_type", "several files or repeats need record files, not binidx",
                                      "set data_type=auto, or train on one binidx prefix"))
    elif not d.is_single_file():
        problems += [ConfigProblem("data.path", f"{s.path} is a binidx prefix: only record files "
                                                f"({', '.join(RECORD_SUFFIXES)}) can be mixed or repeated",
                                   "list the record files it was prepared from instead")
                     for s in d.all_sources() if s.path and not is_records_path(s.path)]
    return problems


def _coerce_data_path(dotted: str, value: Any) -> str | list[str]:
    """data.path: one path, or a list of them."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ConfigError(f"{value!r} is not a path or a list of paths", field=dotted,
                      hint='e.g. path = "chat.jsonl" or path = ["chat.jsonl", "general.parquet"]')


def _coerce_sources(dotted: str, value: Any) -> list[DataSource]:
    """[[data.sources]]: tables with a path and an optional repeat."""
    hint = '[[data.sources]] tables, each with path = "…" and repeat = N'
    if not isinstance(value, list):
        raise ConfigError(f"{value!r} is not a list of tables", field=dotted, hint=hint)
    sources = []
    for i, table in enumerate(value):
        if isinstance(table, DataSource):
            sources.append(table)
            continue
        unknown = sorted(set(table) - {"path", "repeat"}) if isinstance(table, dict) else []
        if not isinstance(table, dict) or unknown or not isinstance(table.get("path"), str):
            raise ConfigError(f"entry {i + 1} must be a table with a path (and repeat)"
                              + (f"; unknown key {unknown[0]!r}" if unknown else ""), field=dotted, hint=hint)
        repeat = table.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int):
            raise ConfigError(f"entry {i + 1}: repeat {repeat!r} is not a whole number", field=dotted, hint=hint)
        sources.append(DataSource(table["path"], repeat))
    return sources


_SPECIAL_COERCIONS = {"data.path": _coerce_data_path, "data.sources": _coerce_sources}


def epochs_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    problems = _below_one(config, ("epochs.epoch_steps", "epochs.epoch_count", "epochs.epoch_save"))
    return problems + _too_large(config, "epochs")


def optim_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    o = config.optim
    problems = _not_positive(config, ("optim.lr_init", "optim.lr_final", "optim.adam_eps"))
    if isinstance(o.lr_final, float) and isinstance(o.lr_init, float) and o.lr_final > o.lr_init:
        problems.append(ConfigProblem("optim.lr_final", "is larger than lr_init",
                                      "the schedule decays: set lr_final ≤ lr_init"))
    problems += _outside_fraction(config, ("optim.beta1", "optim.beta2"))
    if _any_negative(config, ("optim.warmup_steps", "optim.weight_decay", "optim.grad_clip")):
        problems.append(ConfigProblem("optim", "warmup_steps, weight_decay and grad_clip cannot be negative",
                                      "use 0 to turn them off"))
    return problems + _too_large(config, "optim")


def hardware_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    hw = config.hardware
    problems = _below_one(config, ("hardware.devices", "hardware.num_nodes"))
    problems += _too_large(config, "hardware")
    if facts.cuda_available is False:
        problems += _needs_cuda_problems(config)
    found = facts.cuda_devices
    if found is not None and hw.devices > max(found, 1) and hw.accelerator != "cpu":
        problems.append(ConfigProblem("hardware.devices", f"{hw.devices} GPUs asked for, {found} found",
                                      f"set devices={max(found, 1)}"))
    sizes = KERNEL_HEAD_SIZES.get(hw.op)
    if facts.spec is not None and sizes and facts.spec.head_size not in sizes:
        listed = ", ".join(map(str, sizes))
        problems.append(ConfigProblem("hardware.op", f"the {hw.op} kernel supports head sizes {listed}, "
                                                     f"the model has {facts.spec.head_size}", "use op=auto"))
    return problems


def _needs_cuda_problems(config: RunConfig) -> list[ConfigProblem]:
    """Hardware settings that need a CUDA GPU, on a machine known to have none."""
    hw = config.hardware
    problems = []
    if hw.accelerator == "gpu":
        problems.append(ConfigProblem("hardware.accelerator", "no CUDA GPU was found",
                                      "set accelerator=cpu (slow) or auto"))
    if hw.strategy.startswith("deepspeed") or hw.strategy == "ddp":
        problems.append(ConfigProblem("hardware.strategy", f"{hw.strategy} needs CUDA GPUs",
                                      "use strategy=auto on this machine"))
    if hw.op in ("cuda", "triton", "fla"):
        problems.append(ConfigProblem("hardware.op", f"the {hw.op} kernel needs a CUDA GPU", "use op=auto"))
    if hw.precision == "fp16":
        problems.append(ConfigProblem("hardware.precision", "fp16 training needs a CUDA GPU",
                                      "use fp32 (or bf16) on CPU"))
    return problems


def checkpoint_policy_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    """output.save_every_steps and output.keep_last: counts where 0 means off."""
    problems = []
    for dotted, example in (("output.save_every_steps", "e.g. 500"), ("output.keep_last", "e.g. 3")):
        value = get_field(config, dotted)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            problems.append(ConfigProblem(dotted, f"must be 0 (off) or more, got {value}", f"{example}, or 0"))
        elif isinstance(value, int) and not isinstance(value, bool) and value > UPPER_BOUNDS[dotted]:
            problems.append(ConfigProblem(dotted, f"must be at most {UPPER_BOUNDS[dotted]:,}, got {value:,}",
                                          f"set {dotted} to {UPPER_BOUNDS[dotted]:,} or less"))
    return problems


def sample_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    """output.sample_every: a count of steps, 1 or more (checked whether or not prompts are set)."""
    return [problem for problem in _below_one(config, ("output.sample_every",)) + _too_large(config, "output")
            if problem.field == "output.sample_every"]


def cross_section_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    """Settings of different sections that do not go together."""
    if config.method.name == "state" and config.hardware.precision == "fp16":
        return [ConfigProblem("hardware.precision", "state tuning's learning rate (~1) overflows fp16",
                              "use bf16 or fp32")]
    return []


def memory_problems(config: RunConfig, facts: ValidationFacts) -> list[ConfigProblem]:
    """micro_bsz × ctx_len against the memory estimate of the chosen device: free VRAM on a GPU
    (and the RAM that offloaded optimizer states take), the available RAM on the CPU. Needs the
    model's spec and the memory facts; runs before the model is built."""
    budget, spec = facts.memory, facts.spec
    if spec is None or budget is None or field_type_problems(config, facts) or _counts_out_of_range(config):
        return []
    if budget.on_gpu:
        return (_device_fit_problems(config, spec, budget.device, budget.gpu_free_bytes, "cuda")
                + _offload_fit_problems(config, spec, budget.ram_available_bytes))
    return _device_fit_problems(config, spec, budget.device, budget.ram_available_bytes, "cpu")


def _counts_out_of_range(config: RunConfig) -> bool:
    """Counts out of range (reported by their sections) make no estimate."""
    names = ("data.ctx_len", "data.micro_bsz", "method.r", "method.lisa_r", "hardware.devices", "hardware.num_nodes")
    return any(not 1 <= get_field(config, dotted) <= UPPER_BOUNDS[dotted] for dotted in names)


def _device_fit_problems(config: RunConfig, spec, device: str, free: int | None, kind: str) -> list[ConfigProblem]:
    from rwkv_tui.trainer.vram import GB, estimate, fitting_chunk_ctx, largest_micro_bsz

    if free is None:
        return []
    hw = config.hardware
    need = estimate(spec, config, hw.devices * hw.num_nodes, kind).total
    if need <= free:
        return []
    d = config.data
    fitting = largest_micro_bsz(spec, config, free, kind)
    lower = f"lower micro_bsz to {fitting} or ctx_len" if fitting else "lower ctx_len"
    chunk = fitting_chunk_ctx(spec, config, free, kind) if not fitting and not d.chunk_ctx else 0
    if chunk:  # infctx keeps the whole ctx_len and trains it in chunks
        lower = f"set data.chunk_ctx={chunk} (ctx_len {d.ctx_len:,} in chunks of {chunk:,} fits), or lower ctx_len"
    return [ConfigProblem("data.micro_bsz", f"micro_bsz × ctx_len = {d.micro_bsz:,} × {d.ctx_len:,} needs about "
                                            f"{need / GB:,.1f} GB on {device}, {free / GB:,.1f} GB free",
                          f"{lower}; turn on grad_cp, use int8/nf4 quantization or state tuning")]


def _offload_fit_problems(config: RunConfig, spec, ram: int | None) -> list[ConfigProblem]:
    from rwkv_tui.trainer.vram import GB, offloaded_bytes

    need = offloaded_bytes(spec, config)
    if ram is None or need <= ram:
        return []
    return [ConfigProblem("hardware.strategy", f"{config.hardware.strategy} keeps about {need / GB:,.1f} GB of "
                                               f"optimizer states in CPU RAM, {ram / GB:,.1f} GB available",
                          "use a strategy without offload, or a method with fewer trained weights")]


# What `validate` runs, in this order: one check per section, the rules joining sections, then
# whether the run fits the device's memory.
SECTION_CHECKS = (field_type_problems, model_problems, method_problems, data_problems, epochs_problems,
                  optim_problems, hardware_problems, checkpoint_policy_problems, sample_problems,
                  cross_section_problems, memory_problems)


# Shared range rules. A value of the wrong type is skipped: field_type_problems reports it.

def _below_one(config: RunConfig, names: tuple[str, ...]) -> list[ConfigProblem]:
    """Counts that must be at least 1."""
    problems = []
    for dotted in names:
        value = get_field(config, dotted)
        if isinstance(value, int) and value < 1:
            problems.append(ConfigProblem(dotted, f"must be at least 1, got {value}", f"set {dotted} to 1 or more"))
    return problems


def _too_large(config: RunConfig, section: str) -> list[ConfigProblem]:
    """The section's counts above their ceiling in UPPER_BOUNDS."""
    problems = []
    for dotted, limit in UPPER_BOUNDS.items():
        value = get_field(config, dotted) if dotted.startswith(section + ".") else None
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            problems.append(ConfigProblem(dotted, f"must be at most {limit:,}, got {value:,}",
                                          f"set {dotted} to {limit:,} or less"))
    return problems


def _not_positive(config: RunConfig, names: tuple[str, ...]) -> list[ConfigProblem]:
    problems = []
    for dotted in names:
        value = get_field(config, dotted)
        if isinstance(value, float) and not value > 0:
            problems.append(ConfigProblem(dotted, f"must be positive, got {value}",
                                          "e.g. 2e-5 for LoRA, 1 for state tuning"))
    return problems


def _outside_fraction(config: RunConfig, names: tuple[str, ...]) -> list[ConfigProblem]:
    """Values that must lie in [0, 1): Adam's betas, dropout."""
    problems = []
    for dotted in names:
        value = get_field(config, dotted)
        if isinstance(value, float) and not 0 <= value < 1:
            problems.append(ConfigProblem(dotted, f"must be in [0, 1), got {value}",
                                          "e.g. 0.9 / 0.99 for betas, 0.01 for dropout"))
    return problems


def _any_negative(config: RunConfig, names: tuple[str, ...]) -> bool:
    values = [get_field(config, dotted) for dotted in names]
    return any(isinstance(v, (int, float)) and v < 0 for v in values)


def ensure_valid(config: RunConfig, spec=None, **facts) -> None:
    """Raise one ConfigError listing every problem (for the CLI and the trainer)."""
    problems = validate(config, spec, **facts)
    if problems:
        raise ConfigError(_listing(problems), field=problems[0].field)
