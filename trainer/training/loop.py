"""`run(config, run_dir)`: one fine-tuning run, read top to bottom.

Lightning Fabric supplies devices, precision and the DDP/DeepSpeed strategies; the loop
itself is ours, so resume, graceful stop and the NaN guard are plain code rather than
callbacks. `_train` is the run's phases, in order:

    setup      base checkpoint, Fabric, model + method + optimizer, resume point, data, trackers
    the step   learning rate, forward/backward over the micro batches, NaN guard, optimizer step
    hooks      periodic work (a validation loss, samples) every N steps, at the start, at the end
    save       epoch checkpoints, the stop/final checkpoint, resume.ckpt
    clean-up   merged outputs, the tracker, the `done` event and status

Everything a watcher needs goes to the run folder (see `folder.py`), written by global
rank 0 alone (`RunLog`), so with several processes each event appears once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from rwkv_tui.trainer.data.datasets import run_cache_dir
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.epochs import epoch_of
from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT, RunFolder
from rwkv_tui.trainer.training.hooks import HookSchedule, PeriodicHook
from rwkv_tui.trainer.training.metrics import Every, SmoothedValue, Throughput, memory_snapshot
from rwkv_tui.trainer.training.schedule import learning_rate
from rwkv_tui.trainer.training.setup import (Training, build_training, fabric_unwrap, launch_rank_is_zero,
                                             launched_run_dir, make_fabric)
from rwkv_tui.trainer.training.resume import RESUME_FILE, ResumePoint, load_resume, save_resume, set_rng_state
from rwkv_tui.trainer.training.run_log import RunLog, RunOpening
from rwkv_tui.trainer.training.outputs import last_good_checkpoint, lower_lr_advice
from rwkv_tui.trainer.training.samples import sample_hooks
from rwkv_tui.trainer.training.signals import StopRequest, deferred_during_save, stop_agreed, stop_on_signals
from rwkv_tui.trainer.training.trackers import Trackers, open_trackers, require_tracker_packages
from rwkv_tui.trainer.training.validation import validation_hooks

__all__ = ["RESUME_FILE", "PeriodicHook", "RunResult", "TrainingError", "accumulate_gradients",
           "masked_cross_entropy", "optimizer_step", "run"]
_OOM_HINT = ("lower micro_bsz or ctx_len (or set data.chunk_ctx to train long samples in chunks), turn on grad_cp, "
             "use int8/nf4 quantization, or choose state tuning")
# What `--set` may change on resume: how long the run goes on and how often it saves.
RESUMABLE_SETTINGS = ("epochs.epoch_count", "epochs.epoch_save")
_NAN_HINT = "lower lr_init, check the data for broken samples, or use bf16/fp32 instead of fp16"


class TrainingError(RwkvTuiError):
    """The run could not go on (non-finite loss, out of memory); a checkpoint may exist."""


@dataclass
class RunResult:
    reason: str  # "finished" | "stopped…" | "error"
    step: int
    run_dir: Path
    outputs: list[Path]


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over the tokens the mask marks as trained (SFT masks, padding)."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    mask = loss_mask.flatten().to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------------------------
# The run's live objects, and the periodic hooks that see them


@dataclass
class RunContext:
    """A run's live objects: built by `_setup`, advanced by `_train_step`, handed to the hooks."""
    config: Any
    spec: Any                            # the base model's ModelSpec
    log: RunLog
    fabric: Any
    model: Any                           # Fabric-wrapped RWKV
    optimizer: Any                       # Fabric-wrapped AdamW
    method: Any                          # trainer.peft Method
    batches: Iterator[dict[str, torch.Tensor]]
    total_steps: int
    tokens_per_step: int                 # all ranks together
    step: int = 0                        # optimizer steps done
    smoothed: SmoothedValue = field(default_factory=SmoothedValue)
    tracker: Trackers | None = None      # output.trackers (and wandb), on rank 0 (trackers.py)
    outputs: list[Path] = field(default_factory=list)
    saved_at_step: int = -1
    reason: str = "finished"
    throughput: Throughput = field(default_factory=Throughput)
    status_due: Every = field(default_factory=lambda: Every(seconds=1.0))  # status.json is fsynced
    wkv_op_reported: bool = False
    last_loss: float | None = None       # the last step's loss, for the final status (rank 0)

    @property
    def folder(self) -> RunFolder:
        return self.log.folder

    @property
    def is_global_zero(self) -> bool:
        return self.fabric.is_global_zero


# ---------------------------------------------------------------------------------------------
# The run


def run(
    config=None,
    run_dir: str | Path = Path(DEFAULT_RUNS_ROOT) / "run",
    *,
    resume: bool = False,
    force: bool = False,
    changes: Sequence[str] = (),
    stop: StopRequest | None = None,
    on_step=None,
    hooks: Sequence[PeriodicHook] = (),
) -> RunResult:
    """Train as `config` says, writing the run folder at `run_dir`.

    With `resume=True` the frozen `config.toml` of `run_dir` is used and training
    continues from its last checkpoint; `changes` (KEY=VALUE) may alter the settings a resume
    may change (`RESUMABLE_SETTINGS`). A new run refuses a folder that already holds one unless
    `force` replaces it. The folder's lock is taken first (a second trainer is refused), and
    nothing in it is written before the settings and base model are validated. `stop` lets a
    caller (or SIGINT/SIGTERM) end the run gracefully; `on_step(step, event)` is called after each
    optimizer step (on rank 0); `hooks` do periodic work (see `PeriodicHook`). With several
    processes only global rank 0 writes the run folder, and the ranks Fabric's launcher starts
    use rank 0's folder.
    """
    folder = RunFolder.at(launched_run_dir(run_dir))
    # Fabric does not exist yet: the launcher's variables say which process is rank 0.
    log = RunLog(folder, writes=launch_rank_is_zero(), opening=RunOpening(resume=resume, overwrite=force))
    stop = stop or StopRequest()
    try:
        config = _run_config(config, log, resume=resume, changes=changes)
        with stop_on_signals(stop):
            return _train(config, log, resume=resume, stop=stop, on_step=on_step, hooks=HookSchedule(hooks))
    except BaseException as exc:
        _report_failure(log, exc)
        raise
    finally:
        log.close()


def _train(config, log: RunLog, *, resume: bool, stop: StopRequest, on_step, hooks: HookSchedule) -> RunResult:
    ctx = _setup(config, log, resume=resume)
    # built in: the validation loss when the config sets val data, samples when it sets prompts
    hooks.hooks[:0] = validation_hooks(ctx) + sample_hooks(ctx)
    hooks.at_start(ctx)
    ctx.throughput.start()
    while ctx.step < ctx.total_steps:
        event = _train_step(ctx, stop)
        if event is None:  # a stop between micro batches: the partial step is dropped
            ctx.reason = stop.reason
            break
        _report_step(ctx, event, on_step)
        hooks.after_step(ctx)
        _end_epoch(ctx, event, stop)
        _save_every_steps(ctx, stop)
    hooks.at_end(ctx)
    _save_last(ctx, stop)
    return _clean_up(ctx)


def _run_config(config, log: RunLog, *, resume: bool, changes: Sequence[str]):
    """The folder's frozen config.toml on resume (with the allowed `changes`); else `config`.
    Either is frozen into config.toml by `log.start()`, once validation passed."""
    from rwkv_tui.trainer.config import apply_overrides, load_config

    folder = log.folder
    if not resume:
        if config is None:
            raise ValueError("run() needs a config unless resuming")
        log.opening.config = config
        return config
    if not folder.config.is_file() or folder.config.is_symlink():
        raise RwkvTuiError("no config.toml in this run folder", path=folder.path,
                           hint="resume takes a folder created by `rwkv-tui train`")
    frozen = load_config(folder.config)
    if not changes:
        return frozen
    refused = sorted({item.split("=", 1)[0].strip() for item in changes} - set(RESUMABLE_SETTINGS))
    if refused:
        raise RwkvTuiError(f"--set {', '.join(refused)} cannot change on resume: the run's checkpoint was "
                           "trained with the settings in config.toml", path=folder.config,
                           hint=f"on resume only {', '.join(RESUMABLE_SETTINGS)} may change; "
                                "start a new run (with method.init_from) to change the rest")
    changed = apply_overrides(frozen, list(changes))
    log.opening.config = changed
    log.opening.notes = [f"on resume {key}: {_setting(frozen, key)} -> {_setting(changed, key)}"
                         for key in dict.fromkeys(item.split("=", 1)[0].strip() for item in changes)]
    return changed


def _setting(config, dotted: str):
    section, name = dotted.split(".", 1)
    return getattr(getattr(config, section), name)


def _report_failure(log: RunLog, exc: BaseException) -> None:
    """The error and `done` in the folder; nothing when the run failed before its first write
    (a refused folder or invalid settings: the caller prints the error)."""
    if not log.started:
        return
    if isinstance(exc, RwkvTuiError):
        log.emit("error", message=exc.message, hint=exc.hint)
        error = str(exc)
    else:
        error = f"{type(exc).__name__}: {exc}"
        log.emit("error", message=error)
    log.emit("done", reason="error")
    log.status(state="failed", error=error)


# ---------------------------------------------------------------------------------------------
# Setup


def _setup(config, log: RunLog, *, resume: bool) -> RunContext:
    """Model, method, optimizer, data and trackers, restored from resume.ckpt when resuming."""
    require_tracker_packages(config)  # a missing tracker package stops the run before its first write
    state_dict, spec = _checked_checkpoint(config)
    log.start()  # the run folder's first write, now that the settings are known to work
    fabric = make_fabric(config, run_dir=log.folder.path)
    log.follow_rank(fabric.is_global_zero)
    log.emit("loading", stage="model", message="loading model…", done=0, total=1)  # shown until the first step
    training = build_training(config, state_dict, spec, fabric,
                              before_optimizer=_warm_starter(config, log, resume))
    del state_dict  # the model holds what it needs: free the rest before the data loads
    log.log(f"model {spec.display_name}, method {config.method.name}: "
            f"{training.trainable:,} trainable of {training.total:,} parameters")
    point = load_resume(fabric, log, training) if resume else ResumePoint()
    log.emit("loading", stage="data", message="preparing data…", done=0, total=0)
    batches = _batches(config, spec, fabric, point.step, run_cache_dir(log.folder.path),
                       progress=_data_progress(log))
    log.emit("loading", stage="data", message="data ready", done=1, total=1)
    set_rng_state(point.rng)  # after the loader is built, as an uninterrupted run stood here
    ctx = RunContext(config=config, spec=spec, log=log, fabric=fabric, model=training.model,
                     optimizer=training.optimizer, method=training.method, batches=batches,
                     total_steps=_total_steps(config),
                     tokens_per_step=_samples_per_step(config) * config.data.ctx_len * fabric.world_size,
                     step=point.step, smoothed=point.smoothed)
    ctx.tracker = open_trackers(config, log.folder.path) if fabric.is_global_zero else None
    _announce_start(ctx, training, resumed=resume)
    ctx.model.train()
    return ctx


def _checked_checkpoint(config):
    """The base model's weights (memory-mapped) and spec, once the config is known to suit them and
    this machine: the settings alone first (so an empty model.path is named as such), then with the
    model's shape and the chosen device's free memory, before any tensor is copied or moved."""
    from rwkv_tui.trainer.checkpoint import load_checkpoint
    from rwkv_tui.trainer.config import ensure_valid
    from rwkv_tui.trainer.hardware import memory_budget
    from rwkv_tui.trainer.peft.quant import bitsandbytes_available

    hw = config.hardware
    machine = {"cuda_available": torch.cuda.is_available(), "bitsandbytes_available": bitsandbytes_available()}
    ensure_valid(config, **machine)
    state_dict, spec = load_checkpoint(config.model.path)
    ensure_valid(config, spec, memory=memory_budget(hw.accelerator, hw.devices, machine["cuda_available"]),
                 **machine)
    return state_dict, spec


def _total_steps(config) -> int:
    return config.epochs.epoch_count * config.epochs.epoch_steps


def _samples_per_step(config) -> int:
    """Samples one rank reads per optimizer step."""
    return config.data.micro_bsz * config.data.accumulate_grad_batches


def _warm_starter(config, log: RunLog, resume: bool) -> Callable[[Any, Any], None] | None:
    """A fresh run with method.init_from starts from that file; a resume has its own weights."""
    if not config.method.init_from or resume:
        return None
    return lambda model, method: _warm_start(model, method, config, log)


def _batches(config, spec, fabric, start_step: int, cache_dir: Path,
             progress=None) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's batches from `start_step` to the end: what an uninterrupted run reads there.
    Record files are tokenized once into `cache_dir` (streaming, as `data prepare`) and memory-mapped;
    several files (data.path as a list, [[data.sources]]) with their repeats into one cache.
    `progress(phase, done, total, tokens)` hears how the tokenizing goes."""
    from rwkv_tui.trainer.data.datasets import HeldOut, build_dataset, prepare_token_cache
    from rwkv_tui.trainer.training.sampling import ResumableSampler

    data = config.data
    sources = data.all_sources()
    held_out = HeldOut(data.val_fraction, config.output.seed)  # never trained on: the validation split
    if fabric.local_rank == 0:  # one process per machine tokenizes the records; the others then read its cache
        prepare_token_cache(sources, data.data_type, cache_dir, held_out, progress=progress)
    fabric.barrier()
    dataset = build_dataset(sources, ctx_len=data.ctx_len, loading=data.loading, loss_mask=data.loss_mask,
                            seed=config.output.seed, vocab_size=spec.vocab_size, data_type=data.data_type,
                            cache_dir=cache_dir, held_out=held_out)
    per_step = _samples_per_step(config)
    sampler = ResumableSampler(len(dataset), seed=config.output.seed, start=start_step * per_step,
                               length=(_total_steps(config) - start_step) * per_step,
                               rank=fabric.global_rank, world_size=fabric.world_size)
    # A private generator: the loader's worker seed must not come from the global RNG, whose
    # state (dropout) a resume restores exactly.
    loader = DataLoader(dataset, batch_size=data.micro_bsz, sampler=sampler, drop_last=True,
                        generator=torch.Generator().manual_seed(config.output.seed))
    return iter(fabric.setup_dataloaders(loader, use_distributed_sampler=False))


def _data_progress(log: RunLog) -> Callable[[str, int, int, int], None]:
    """`loading` events while the data is tokenized (at most one a second, and the last one), so the
    dashboard shows "tokenizing data (n/N)" instead of waiting silently."""
    from rwkv_tui.trainer.training.metrics import Every

    due = Every(seconds=1.0)
    verbs = {"tokenize": "tokenizing data", "write": "writing the token cache"}

    def report(phase: str, done: int, total: int, tokens: int) -> None:
        if done == total or due.ready():
            log.emit("loading", stage="data", message=f"{verbs.get(phase, phase)} ({done}/{total})",
                     done=done, total=total)
    return report


def _announce_start(ctx: RunContext, training: Training, *, resumed: bool) -> None:
    hw = ctx.config.hardware
    ctx.log.emit("start", step=ctx.step, total_steps=ctx.total_steps, epoch_steps=ctx.config.epochs.epoch_steps,
                 model=ctx.spec.display_name, version=ctx.spec.version, method=ctx.config.method.name,
                 trainable_params=training.trainable, total_params=training.total, tokens_per_step=ctx.tokens_per_step, device=str(ctx.fabric.device),
                 precision=hw.precision, strategy=hw.strategy, resumed=resumed)
    ctx.log.status(state="running", step=ctx.step, total_steps=ctx.total_steps)


# ---------------------------------------------------------------------------------------------
# The step


def _train_step(ctx: RunContext, stop: StopRequest) -> dict[str, Any] | None:
    """One optimizer step over `accumulate_grad_batches` micro batches; returns its `step` event,
    or None when a stop came first (the weights then stay as they were after step `ctx.step`)."""
    lr = _apply_learning_rate(ctx)
    step_loss = _accumulate(ctx, stop)
    if step_loss is None:
        ctx.optimizer.zero_grad(set_to_none=True)
        return None
    _guard_finite(ctx, step_loss)
    optimizer_step(ctx.fabric, ctx.model, ctx.optimizer, ctx.config.optim.grad_clip)
    ctx.step += 1
    ctx.method.on_step(ctx.model, ctx.step)
    ctx.throughput.record(ctx.tokens_per_step)
    return _step_event(ctx, step_loss, lr)


def _apply_learning_rate(ctx: RunContext) -> float:
    optim = ctx.config.optim
    lr = learning_rate(ctx.step, ctx.total_steps, optim.lr_init, optim.lr_final, optim.warmup_steps, optim.schedule)
    for group in ctx.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _accumulate(ctx: RunContext, stop: StopRequest) -> float | None:
    """`accumulate_gradients`, stopping between micro batches when asked, with running out of
    memory turned into what to change."""
    try:
        return accumulate_gradients(ctx.fabric, ctx.model, ctx.batches, ctx.config.data.accumulate_grad_batches,
                                    should_stop=lambda: stop_agreed(stop, ctx.fabric), loss_fn=_loss_fn(ctx))
    except torch.cuda.OutOfMemoryError:
        raise TrainingError(_oom_message(ctx.spec, ctx.config), hint=_OOM_HINT) from None


def _guard_finite(ctx: RunContext, step_loss: float) -> None:
    """A nan/inf loss ends the run before it reaches the weights, pointing at the last checkpoint
    whose loss and weights are finite and sane (the one just saved may already be diverged)."""
    if math.isfinite(step_loss):  # a host float: the sync happened in accumulate_gradients
        return
    ctx.optimizer.zero_grad(set_to_none=True)
    raise TrainingError(f"the loss became {step_loss} at step {ctx.step + 1}; the weights were not updated; "
                        f"{last_good_checkpoint(ctx.folder.checkpoints, ctx.outputs, ctx.saved_at_step)}",
                        hint=f"{lower_lr_advice(ctx.config.optim.lr_init)}; {_NAN_HINT}")


def _loss_fn(ctx: RunContext):
    """data.chunk_ctx > 0: each sample in chunks with the state carried (infctx.py); else whole."""
    from rwkv_tui.trainer.training.infctx import chunked_batch_loss

    chunk_ctx = ctx.config.data.chunk_ctx
    return chunked_batch_loss(ctx.fabric, chunk_ctx) if chunk_ctx > 0 else None


def whole_sample_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits, _ = model(batch["input_ids"])
    return masked_cross_entropy(logits, batch["targets"], batch["loss_mask"])


def accumulate_gradients(fabric, model, batches, accumulate: int,
                         should_stop: Callable[[], bool] | None = None, loss_fn=None) -> float | None:
    """Forward and backward over `accumulate` micro batches; their mean loss as a host float, or
    None when `should_stop()` said so before a micro batch: a stop (SIGTERM) waits one micro batch
    at most, however large `accumulate` is. `loss_fn(model, batch)` is a micro batch's loss
    (default `whole_sample_loss`; infctx passes its chunked one)."""
    loss_fn = loss_fn or whole_sample_loss
    loss_sum = torch.zeros(())
    for micro in range(accumulate):
        if should_stop is not None and should_stop():
            return None
        batch = next(batches)
        with fabric.no_backward_sync(model, enabled=micro < accumulate - 1):
            loss = loss_fn(model, batch)
            fabric.backward(loss / accumulate)
        # A running sum on the device: nothing grows with `accumulate`; the loss is read once per
        # step (on one process `should_stop` reads a host flag; with several it is a collective).
        loss_sum = loss.detach() + loss_sum.to(loss.device)
    return loss_sum.item() / accumulate  # CPU–GPU sync: once every micro batch is queued


def optimizer_step(fabric, model, optimizer, grad_clip: float) -> None:
    if grad_clip > 0:  # the norm stays on the device (error_if_nonfinite=False): no sync
        fabric.clip_gradients(model, optimizer, max_norm=grad_clip, error_if_nonfinite=False)
    optimizer.step()  # with fp16's GradScaler a CPU–GPU sync: it reads whether the gradients overflowed
    optimizer.zero_grad(set_to_none=True)


def _step_event(ctx: RunContext, step_loss: float, lr: float) -> dict[str, Any]:
    event = {
        "step": ctx.step,
        "epoch": epoch_of(ctx.step, ctx.config.epochs).number,  # 1-based, like the files
        "loss": step_loss,
        "smoothed_loss": ctx.smoothed.update(step_loss),
        "lr": lr,
        "tokens_per_s": ctx.throughput.tokens_per_second,
        "eta_s": ctx.throughput.eta_seconds(ctx.total_steps - ctx.step),
        "total_steps": ctx.total_steps,
        **memory_snapshot(ctx.fabric.device),  # allocator counters kept on the host: no sync
    }
    if not ctx.wkv_op_reported:
        event.update(_wkv_op_fields(ctx.model))
        ctx.wkv_op_reported = True
    return event


def _wkv_op_fields(model) -> dict[str, Any]:
    """The WKV op the model ran and, where op=auto timed the candidates on a GPU, what it saw:
    both come from the op call's own result, kept by the model."""
    core = fabric_unwrap(model)
    fields: dict[str, Any] = {"wkv_op": core.last_wkv_op}
    if core.last_wkv_trials_ms:
        fields["wkv_op_trials_ms"] = core.last_wkv_trials_ms
    return fields


def _report_step(ctx: RunContext, event: dict[str, Any], on_step) -> None:
    """The step event, status, tracker and `on_step`: rank 0's view, once."""
    if not ctx.is_global_zero:
        return
    ctx.log.emit("step", **event)
    ctx.last_loss = event["loss"]
    if ctx.status_due.ready():  # status.json is fsynced: once a second is plenty
        ctx.log.status(state="running", step=ctx.step, loss=event["loss"], smoothed_loss=event["smoothed_loss"],
                       eta_s=event["eta_s"])
    if ctx.tracker is not None:
        ctx.tracker.log({k: v for k, v in event.items() if isinstance(v, (int, float))}, step=ctx.step)
    if on_step is not None:
        on_step(ctx.step, event)


# ---------------------------------------------------------------------------------------------
# Save


def _end_epoch(ctx: RunContext, event: dict[str, Any], stop: StopRequest) -> None:
    """At the last step of an epoch: the epoch event, and a checkpoint where epoch_save says."""
    position = epoch_of(ctx.step, ctx.config.epochs)
    if not position.ends_epoch:
        return
    ctx.log.emit("epoch", epoch=position.number, step=ctx.step, smoothed_loss=event["smoothed_loss"])
    if position.save_due or ctx.step == ctx.total_steps:
        _save(ctx, f"epoch{position.number}", stop)


def _save_every_steps(ctx: RunContext, stop: StopRequest) -> None:
    """output.save_every_steps: a `step<N>` checkpoint besides the epoch ones (none twice at a step)."""
    every = ctx.config.output.save_every_steps
    if every > 0 and ctx.step % every == 0 and ctx.saved_at_step != ctx.step:
        _save(ctx, f"step{ctx.step}", stop)


def _save_last(ctx: RunContext, stop: StopRequest) -> None:
    """A stop between epochs, or a last epoch that epoch_save skipped, still ends with a checkpoint."""
    if ctx.saved_at_step != ctx.step:
        _save(ctx, "final" if ctx.reason == "finished" else f"step{ctx.step}", stop)


def _save(ctx: RunContext, tag: str, stop: StopRequest) -> None:
    """The method's output file (rank 0) and resume.ckpt (every rank: DeepSpeed saves collectively),
    only from sane weights, with stop signals held until both are written."""
    from rwkv_tui.trainer.training.outputs import ensure_saveable, save_method_output

    ensure_saveable(ctx)
    paths = []
    with deferred_during_save(stop, lambda name: ctx.log.emit(
            "warning", message=f"{name} during the checkpoint save was ignored; the save finished")):
        if ctx.is_global_zero:
            paths = save_method_output(ctx.model, ctx.method, ctx.spec, ctx.config, ctx.folder.checkpoints, tag)
        save_resume(ctx.fabric, ctx.folder.checkpoints / RESUME_FILE, ctx.model, ctx.optimizer, ctx.method,
                    ctx.step, ctx.smoothed)
    ctx.saved_at_step = ctx.step
    ctx.outputs.extend(paths)
    ctx.log.emit("checkpoint", step=ctx.step, epoch=epoch_of(ctx.step, ctx.config.epochs).completed,
                 files=[str(p) for p in paths])
    if ctx.is_global_zero and ctx.config.output.keep_last > 0:
        _drop_old_checkpoints(ctx)


def _drop_old_checkpoints(ctx: RunContext) -> None:
    """output.keep_last: only the N newest epoch/step files stay (never best, final, merged or resume.ckpt)."""
    from rwkv_tui.trainer.training.outputs import drop_old_checkpoints

    dropped = drop_old_checkpoints(ctx.folder.checkpoints, ctx.method.info, ctx.config.epochs,
                                   ctx.config.output.keep_last)
    if dropped:
        ctx.outputs[:] = [p for p in ctx.outputs if p not in dropped]
        ctx.log.emit("info", message=f"keep_last={ctx.config.output.keep_last}: removed "
                                     + ", ".join(p.name for p in dropped))


# ---------------------------------------------------------------------------------------------
# Clean-up


def _clean_up(ctx: RunContext) -> RunResult:
    """The merged model of a finished adapter run, the tracker closed, the `done` event and status."""
    from rwkv_tui.trainer.training.outputs import finish_outputs

    if ctx.reason == "finished" and ctx.is_global_zero:
        merged = finish_outputs(ctx.config, ctx.outputs, ctx.folder.checkpoints, log=ctx.log)
        ctx.outputs.extend(merged)
        if merged:
            ctx.log.emit("checkpoint", step=ctx.step, epoch=epoch_of(ctx.step, ctx.config.epochs).completed,
                         files=[str(p) for p in merged])
    if ctx.tracker is not None:
        ctx.tracker.close(finished=ctx.reason == "finished")
    outputs = [str(p) for p in ctx.outputs]
    ctx.log.emit("done", reason=ctx.reason, step=ctx.step, outputs=outputs)
    ctx.log.status(state="done" if ctx.reason == "finished" else "stopped", step=ctx.step, outputs=outputs,
                   **_final_loss(ctx))
    return RunResult(reason=ctx.reason, step=ctx.step, run_dir=ctx.folder.path, outputs=ctx.outputs)


def _final_loss(ctx: RunContext) -> dict[str, float]:
    """The last step's losses for the final status.json: status is written once a second while
    training, so without these a run's status would keep an earlier step's loss."""
    if ctx.last_loss is None:  # no step in this process (a resume that stopped at once)
        return {}
    return {"loss": ctx.last_loss, "smoothed_loss": ctx.smoothed.smoothed}


# ---------------------------------------------------------------------------------------------
# Helpers


def _warm_start(model, method, config, log: RunLog) -> None:
    """Continue from an adapter/state file (ours, or RWKV-PEFT's without metadata)."""
    from rwkv_tui.trainer.adapters import detect_method, load_adapter_file

    path = config.method.init_from
    tensors, metadata = load_adapter_file(path)
    kind = (metadata or {}).get("method") or detect_method(tensors, path)
    if kind != config.method.name:
        raise RwkvTuiError(f"the file holds a {kind} adapter, the run uses {config.method.name}", path=path,
                           hint=f"set method.name={kind}")
    if metadata and kind == "lora" and metadata.get("alpha") not in (None, config.method.alpha):
        raise RwkvTuiError(f"the adapter was trained with alpha {metadata['alpha']}, the run uses "
                           f"{config.method.alpha}", path=path, hint=f"set method.alpha={metadata['alpha']}")
    method.load_adapter(model, tensors, metadata, path)
    log.emit("info", message=f"started from {path}")


def _oom_message(spec, config) -> str:
    try:
        from rwkv_tui.trainer.vram import estimate

        need = estimate(spec, config).total / 1024**3
        free, total = torch.cuda.mem_get_info()
        figures = f" (the estimate for these settings is {need:.1f} GB; the GPU has {total / 1024**3:.1f} GB, " \
                  f"{free / 1024**3:.1f} GB free)"
    except Exception:  # the advice matters more than the figures
        figures = ""
    return (f"CUDA ran out of memory with micro_bsz={config.data.micro_bsz}, ctx_len={config.data.ctx_len}, "
            f"grad_cp={config.hardware.grad_cp}, quant={config.method.quant}{figures}")
