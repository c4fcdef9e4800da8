"""`run(config, run_dir)`: one fine-tuning run, read top to bottom.

Lightning Fabric supplies devices, precision and the DDP/DeepSpeed strategies; the loop
itself is ours (schedule, forward, backward with accumulation, clip, step, log,
checkpoint), so resume, graceful stop and the NaN guard are plain code rather than
callbacks. Everything a watcher needs goes to the run folder (see `folder.py`).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from rwkv_tui.kernels.autotune import trial_summary
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.folder import EventWriter, RunFolder
from rwkv_tui.trainer.training.metrics import Every, SmoothedValue, Throughput, memory_snapshot
from rwkv_tui.trainer.training.schedule import learning_rate
from rwkv_tui.trainer.training.setup import build_training, fabric_unwrap, make_fabric
from rwkv_tui.trainer.training.signals import StopRequest, stop_on_signals

RESUME_FILE = "resume.ckpt"


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


def run(
    config=None,
    run_dir: str | Path = "runs/run",
    *,
    resume: bool = False,
    stop: StopRequest | None = None,
    on_step=None,
) -> RunResult:
    """Train as `config` says, writing the run folder at `run_dir`.

    With `resume=True` the frozen `config.toml` of `run_dir` is used and training
    continues from its last checkpoint. `stop` lets a caller (or SIGINT/SIGTERM) end the
    run gracefully; `on_step(step, event)` is called after each optimizer step.
    """
    from rwkv_tui.trainer.config import load_config, save_config

    folder = RunFolder.at(run_dir).create()
    if resume:
        if not folder.config.exists():
            raise RwkvTuiError("no config.toml in this run folder", path=folder.path,
                               hint="resume takes a folder created by `rwkv-tui train`")
        config = load_config(folder.config)
    elif config is None:
        raise ValueError("run() needs a config unless resuming")
    else:
        save_config(config, folder.config, only_changes=False)

    stop = stop or StopRequest()
    events = EventWriter(folder)
    folder.pid_file.write_text(str(os.getpid()))
    folder.write_status(state="starting", pid=os.getpid(), run_dir=str(folder.path))
    try:
        with stop_on_signals(stop):
            result = _train(config, folder, events, resume=resume, stop=stop, on_step=on_step)
    except RwkvTuiError as exc:
        events.emit("error", message=exc.message, hint=exc.hint)
        events.emit("done", reason="error")
        folder.write_status(state="failed", error=str(exc))
        raise
    except BaseException as exc:
        events.emit("error", message=f"{type(exc).__name__}: {exc}")
        events.emit("done", reason="error")
        folder.write_status(state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        events.close()
        folder.pid_file.unlink(missing_ok=True)
    return result


def _train(config, folder: RunFolder, events: EventWriter, *, resume: bool, stop: StopRequest, on_step) -> RunResult:
    from rwkv_tui.trainer.checkpoint import load_checkpoint
    from rwkv_tui.trainer.config import ensure_valid
    from rwkv_tui.trainer.data.datasets import build_dataset
    from rwkv_tui.trainer.peft.quant import bitsandbytes_available
    from rwkv_tui.trainer.training.outputs import finish_outputs, save_method_output
    from rwkv_tui.trainer.training.sampling import ResumableSampler

    hw, optim, data, epochs = config.hardware, config.optim, config.data, config.epochs
    state_dict, spec = load_checkpoint(config.model.path)
    ensure_valid(config, spec, cuda_available=torch.cuda.is_available(),
                 bitsandbytes_available=bitsandbytes_available())

    fabric = make_fabric(config)

    def warm_start(model, method) -> None:
        if config.method.init_from and not resume:
            _warm_start(model, method, config, events)

    training = build_training(config, state_dict, spec, fabric, before_optimizer=warm_start)
    del state_dict
    model, optimizer, method = training.model, training.optimizer, training.method
    trainable, total = training.trainable, training.total
    events.log(f"model {spec.display_name}, method {config.method.name}: "
               f"{trainable:,} trainable of {total:,} parameters")

    dataset = build_dataset(data.path, ctx_len=data.ctx_len, loading=data.loading, loss_mask=data.loss_mask,
                            seed=config.output.seed, vocab_size=spec.vocab_size)
    total_steps = epochs.epoch_count * epochs.epoch_steps
    accumulate = data.accumulate_grad_batches

    # Resume: trainable weights, optimizer, step, RNG and running averages.
    step, smoothed = 0, SmoothedValue()
    resume_path = folder.checkpoints / RESUME_FILE
    if resume:
        if not resume_path.exists():
            raise RwkvTuiError("the run folder has no checkpoint to resume from", path=resume_path,
                               hint="start a new run; checkpoints are written every epoch_save epochs and on stop")
        restored = fabric.load(resume_path, {"model": model, "optimizer": optimizer}, strict=False)
        step = int(restored["step"])
        smoothed = SmoothedValue.from_state(restored["smoothed"])
        method.on_step(model, step)
        events.emit("info", message=f"resumed at step {step}")

    samples_per_step = data.micro_bsz * accumulate
    sampler = ResumableSampler(len(dataset), seed=config.output.seed, start=step * samples_per_step,
                               length=(total_steps - step) * samples_per_step,
                               rank=fabric.global_rank, world_size=fabric.world_size)
    # A private generator: the loader's worker seed must not come from the global RNG, whose
    # state (dropout) a resume restores exactly.
    loader = DataLoader(dataset, batch_size=data.micro_bsz, sampler=sampler, drop_last=True,
                        generator=torch.Generator().manual_seed(config.output.seed))
    loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False)
    batches = iter(loader)
    if resume:
        _set_rng_state(restored.get("rng"))

    tokens_per_step = samples_per_step * data.ctx_len * fabric.world_size
    tracker = _wandb_run(config, folder) if fabric.is_global_zero else None
    events.emit("start", step=step, total_steps=total_steps, epoch_steps=epochs.epoch_steps,
                model=spec.display_name, method=config.method.name, trainable_params=trainable,
                total_params=total, tokens_per_step=tokens_per_step, device=str(fabric.device),
                precision=hw.precision, strategy=hw.strategy, resumed=resume)
    folder.write_status(state="running", step=step, total_steps=total_steps)
    throughput = Throughput()
    throughput.start()
    status_due = Every(seconds=1.0)
    outputs: list[Path] = []
    saved_at_step = -1
    reason = "finished"
    wkv_op_reported = False

    def save(tag: str) -> None:
        nonlocal saved_at_step
        saved_at_step = step
        paths = save_method_output(model, method, spec, config, folder.checkpoints, tag)
        _save_resume(fabric, resume_path, model, optimizer, method, step, smoothed)
        outputs.extend(paths)
        events.emit("checkpoint", step=step, epoch=step // epochs.epoch_steps + epochs.epoch_begin,
                    files=[str(p) for p in paths])

    model.train()
    while step < total_steps:
        if stop.requested:
            reason = stop.reason
            break
        lr = learning_rate(step, total_steps, optim.lr_init, optim.lr_final, optim.warmup_steps, optim.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr

        try:
            step_loss = accumulate_gradients(fabric, model, batches, accumulate)
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(_oom_message(spec, config), hint="lower micro_bsz or ctx_len, turn on "
                                "grad_cp, use int8/nf4 quantization, or choose state tuning") from None

        if not torch.isfinite(torch.tensor(step_loss)):
            optimizer.zero_grad(set_to_none=True)
            raise TrainingError(
                f"the loss became {step_loss} at step {step + 1}; the weights were not updated and the "
                "last checkpoint is kept",
                hint="lower lr_init, check the data for broken samples, or use bf16/fp32 instead of fp16")
        optimizer_step(fabric, model, optimizer, optim.grad_clip)
        step += 1
        method.on_step(model, step)

        throughput.record(tokens_per_step)
        event = {
            "step": step,
            "epoch": (step - 1) // epochs.epoch_steps + 1 + epochs.epoch_begin,  # 1-based, like the files
            "loss": step_loss,
            "smoothed_loss": smoothed.update(step_loss),
            "lr": lr,
            "tokens_per_s": throughput.tokens_per_second,
            "eta_s": throughput.eta_seconds(total_steps - step),
            "total_steps": total_steps,
            **memory_snapshot(fabric.device),
        }
        if not wkv_op_reported:
            event["wkv_op"] = fabric_unwrap(model).last_wkv_op
            trials = trial_summary()
            if trials:  # op=auto on a GPU timed the candidates: say what it saw
                event["wkv_op_trials_ms"] = trials
            wkv_op_reported = True
        if fabric.is_global_zero:
            events.emit("step", **event)
            if status_due.ready():  # status.json is fsynced: once a second is plenty
                folder.write_status(state="running", step=step, loss=step_loss,
                                    smoothed_loss=event["smoothed_loss"], eta_s=event["eta_s"])
        if tracker is not None:
            tracker.log({k: v for k, v in event.items() if isinstance(v, (int, float))}, step=step)
        if on_step is not None:
            on_step(step, event)

        if step % epochs.epoch_steps == 0:
            epoch = step // epochs.epoch_steps + epochs.epoch_begin
            events.emit("epoch", epoch=epoch, step=step, smoothed_loss=event["smoothed_loss"])
            if (step // epochs.epoch_steps) % epochs.epoch_save == 0 or step == total_steps:
                save(f"epoch{epoch}")

    if saved_at_step != step:  # a stop between epochs, or a last epoch that epoch_save skipped
        save("final" if reason == "finished" else f"step{step}")
    if reason == "finished" and fabric.is_global_zero:
        merged = finish_outputs(config, outputs, folder.checkpoints)
        outputs.extend(merged)
        if merged:
            events.emit("checkpoint", step=step, epoch=step // epochs.epoch_steps + epochs.epoch_begin,
                        files=[str(p) for p in merged])
    if tracker is not None:
        tracker.finish()
    state = "done" if reason == "finished" else "stopped"
    events.emit("done", reason=reason, step=step, outputs=[str(p) for p in outputs])
    folder.write_status(state=state, step=step, outputs=[str(p) for p in outputs])
    return RunResult(reason=reason, step=step, run_dir=folder.path, outputs=outputs)


def _wandb_run(config, folder: RunFolder):
    """Optional Weights & Biases logging (output.wandb = project name), as RWKV-PEFT's --wandb."""
    if not config.output.wandb:
        return None
    try:
        import wandb
    except ImportError:
        raise RwkvTuiError("output.wandb is set but the wandb package is not installed",
                           hint="pip install wandb (and `wandb login`), or leave output.wandb empty") from None
    from rwkv_tui.trainer.config import config_to_dict

    return wandb.init(project=config.output.wandb, name=folder.path.name, dir=str(folder.path),
                      config=config_to_dict(config))


def _warm_start(model, method, config, events) -> None:
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
    events.emit("info", message=f"started from {path}")


def accumulate_gradients(fabric, model, batches, accumulate: int) -> float:
    """Forward and backward over `accumulate` micro batches; the mean loss (synchronises with the GPU)."""
    step_loss = 0.0
    for micro in range(accumulate):
        batch = next(batches)
        with fabric.no_backward_sync(model, enabled=micro < accumulate - 1):
            logits, _ = model(batch["input_ids"])
            loss = masked_cross_entropy(logits, batch["targets"], batch["loss_mask"])
            fabric.backward(loss / accumulate)
        step_loss += loss.item() / accumulate
    return step_loss


def optimizer_step(fabric, model, optimizer, grad_clip: float) -> None:
    if grad_clip > 0:
        fabric.clip_gradients(model, optimizer, max_norm=grad_clip, error_if_nonfinite=False)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state) -> None:
    if state:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])


def _save_resume(fabric, path: Path, model, optimizer, method, step: int, smoothed: SmoothedValue) -> None:
    """Only what the base checkpoint cannot give back: trainable weights, optimizer, counters.

    Written to a temporary name and renamed, so a crash mid-save keeps the previous one.
    """
    in_optimizer = {id(p) for p in method.optimizer_parameters(fabric_unwrap(model))}
    trainable = {name for name, p in fabric_unwrap(model).named_parameters() if id(p) in in_optimizer}
    tmp = path.with_name(path.name + ".tmp")
    state = {"model": model, "optimizer": optimizer, "step": step, "smoothed": smoothed.state_dict(),
             "rng": _rng_state()}
    fabric.save(tmp, state, filter={"model": lambda name, _: name in trainable})
    if fabric.is_global_zero:
        _replace(tmp, path)
    fabric.barrier()


def _replace(tmp: Path, path: Path) -> None:
    import shutil

    if tmp.is_dir():  # DeepSpeed writes a folder: swap folders, then drop the old one
        old = path.with_name(path.name + ".old")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


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
