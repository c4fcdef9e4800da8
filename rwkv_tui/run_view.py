"""What the dashboard knows about a run, folded from its events (pure data, no widgets).

Feeding the same events always gives the same view, so a finished run replayed from
`events.jsonl` looks exactly like the live run did at its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_LOG_LINES = 200


@dataclass
class RunView:
    state: str = "starting"
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    epoch_steps: int | None = None
    loss: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    lr: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    memory_gb: float | None = None
    memory_total_gb: float | None = None
    memory_label: str = "VRAM"
    memory_history: list[float] = field(default_factory=list)
    gpus: list[dict] = field(default_factory=list)  # per-GPU used/total (multi-GPU runs, via NVML)
    checkpoints: list[str] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)  # (style, line)
    problems: int = 0
    title: str = ""
    wkv_op: str | None = None
    done_reason: str | None = None

    def apply(self, event: dict) -> None:
        kind = event.get("kind")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event)

    def _on_start(self, e: dict) -> None:
        self.state = "running"
        self.total_steps = e.get("total_steps")
        self.epoch_steps = e.get("epoch_steps")
        self.step = e.get("step", self.step)
        self.title = f"{e.get('model', '')} · {e.get('method', '')} · {e.get('device', '')}"
        verb = "resumed" if e.get("resumed") else "started"
        self._log("cyan", f"{verb} at step {self.step}/{self.total_steps}: {self.title}")

    def _on_step(self, e: dict) -> None:
        self.state = "running"
        self.step = e["step"]
        self.epoch = e.get("epoch", self.epoch)
        self.total_steps = e.get("total_steps", self.total_steps)
        self.loss.append(float(e["loss"]))
        self.smoothed.append(float(e.get("smoothed_loss", e["loss"])))
        self.lr = e.get("lr")
        self.tokens_per_s = e.get("tokens_per_s")
        self.eta_s = e.get("eta_s")
        self.wkv_op = e.get("wkv_op", self.wkv_op)
        if "vram_gb" in e:
            self.memory_label = "VRAM"
            self.memory_gb, self.memory_total_gb = e["vram_gb"], e.get("vram_total_gb")
        elif "ram_peak_gb" in e:
            self.memory_label = "RAM peak"
            self.memory_gb, self.memory_total_gb = e["ram_peak_gb"], None
        if self.memory_gb is not None:
            self.memory_history.append(self.memory_gb)
        self.gpus = e.get("gpus", self.gpus)

    def _on_epoch(self, e: dict) -> None:
        self._log("", f"epoch {e.get('epoch')} done at step {e.get('step')}, smoothed loss "
                      f"{e.get('smoothed_loss', float('nan')):.4f}")

    def _on_checkpoint(self, e: dict) -> None:
        files = e.get("files", [])
        self.checkpoints.extend(files)
        self._log("green", f"checkpoint at step {e.get('step')}: " + ", ".join(f.rsplit('/', 1)[-1] for f in files))

    def _on_info(self, e: dict) -> None:
        self._log("", str(e.get("message", "")))

    def _on_warning(self, e: dict) -> None:
        self.problems += 1
        self._log("yellow", f"warning: {e.get('message', '')}")

    def _on_error(self, e: dict) -> None:
        self.problems += 1
        hint = f" — {e['hint']}" if e.get("hint") else ""
        self._log("bold red", f"error: {e.get('message', '')}{hint}")

    def _on_done(self, e: dict) -> None:
        reason = e.get("reason", "finished")
        self.done_reason = reason
        self.state = {"finished": "done", "error": "failed"}.get(reason, "stopped")
        self.eta_s = 0.0 if self.state == "done" else None
        self._log("bold", f"run {self.state} ({reason}) at step {e.get('step', self.step)}")

    def _log(self, style: str, line: str) -> None:
        self.log.append((style, line))
        del self.log[:-_LOG_LINES]

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
