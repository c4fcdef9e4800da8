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
    steps: list[int] = field(default_factory=list)  # the step of each loss point (the chart's x axis)
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
    model_name: str = ""  # the model's display name, e.g. "RWKV-7 0.1B (L12 C768)"
    model_version: str = ""  # x070 / x060 / x052, from the start event ("" from runs older than that field)
    outputs: list[str] = field(default_factory=list)  # what the run left when it ended (merged model included)
    wkv_op: str | None = None
    done_reason: str | None = None
    val: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    best: tuple[int, float, str] | None = None  # (step, val loss, file) of best-<method>.pth
    # prompt -> {"first": (step, text), "latest": (step, text)}: the samples panel
    samples: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    loading: str | None = None  # what the trainer is doing before its first step
    elapsed_s: float | None = None  # training time from the events' clocks (resumes add up, gaps do not)
    _segment_start: float | None = None
    _segment_end: float | None = None
    _earlier_segments: float = 0.0

    def apply(self, event: dict) -> None:
        """Fold one event in; a malformed one (not an object, a field missing or of the wrong
        type) is skipped and reported in the log, never raised: a watcher must not crash."""
        if not isinstance(event, dict):
            self._on_warning({"message": f"malformed event skipped: {event!r:.80}"})
            return
        self._clock(event)
        handler = getattr(self, f"_on_{event.get('kind')}", None)
        if handler is None:
            return
        try:
            handler(event)
        except (KeyError, TypeError, ValueError) as exc:
            self._on_warning({"message": f"malformed {event.get('kind')} event skipped ({type(exc).__name__}: "
                                         f"{exc}): {event!r:.80}"})

    def _clock(self, e: dict) -> None:
        """Elapsed time: each trainer process (a `start` event to its last event) counts; the time a
        stopped run sat before its resume does not."""
        t = _number(e, "t")
        if t is None:
            return
        if e.get("kind") == "start" or self._segment_start is None:
            if self._segment_start is not None:
                self._earlier_segments += self._segment_end - self._segment_start
            self._segment_start = t
        self._segment_end = t
        self.elapsed_s = self._earlier_segments + (self._segment_end - self._segment_start)

    def _on_start(self, e: dict) -> None:
        self.state = "running"
        self.total_steps = _count(e, "total_steps")
        self.epoch_steps = _count(e, "epoch_steps")
        self.step = _count(e, "step") or self.step
        self.model_name = str(e.get("model", ""))
        self.model_version = str(e.get("version", ""))
        self.title = f"{e.get('model', '')} · {e.get('method', '')} · {e.get('device', '')}"
        verb = "resumed" if e.get("resumed") else "started"
        self._log("cyan", f"{verb} at step {self.step}/{self.total_steps}: {self.title}")

    def _on_step(self, e: dict) -> None:
        step, loss = _count(e, "step"), _number(e, "loss")
        if step is None or loss is None:  # checked before anything changes: the view stays consistent
            raise ValueError("a step event needs a whole-number step and a numeric loss")
        smoothed = _number(e, "smoothed_loss")
        self.state = "running"
        self.loading = None
        while self.steps and self.steps[-1] >= step:  # a resume replays steps after its checkpoint: keep the new ones
            del self.steps[-1], self.loss[-1], self.smoothed[-1]
        self.steps.append(step)
        self.step = step
        self.epoch = _count(e, "epoch") or self.epoch
        self.total_steps = _count(e, "total_steps") or self.total_steps
        self.loss.append(loss)
        self.smoothed.append(loss if smoothed is None else smoothed)
        self.lr = _number(e, "lr")
        self.tokens_per_s = _number(e, "tokens_per_s")
        self.eta_s = _number(e, "eta_s")
        if isinstance(e.get("wkv_op"), str):
            self.wkv_op = e["wkv_op"]
        if "vram_gb" in e:
            self.memory_label = "VRAM"
            self.memory_gb, self.memory_total_gb = _number(e, "vram_gb"), _number(e, "vram_total_gb")
        elif "ram_peak_gb" in e:
            self.memory_label = "RAM peak"
            self.memory_gb, self.memory_total_gb = _number(e, "ram_peak_gb"), None
        if self.memory_gb is not None:
            self.memory_history.append(self.memory_gb)
        if isinstance(e.get("gpus"), list):
            self.gpus = [g for g in e["gpus"] if isinstance(g, dict) and {"index", "used_gb", "total_gb"} <= g.keys()]

    def _on_epoch(self, e: dict) -> None:
        smoothed = _number(e, "smoothed_loss")
        self._log("", f"epoch {e.get('epoch')} done at step {e.get('step')}, smoothed loss "
                      f"{float('nan') if smoothed is None else smoothed:.4f}")

    def _on_checkpoint(self, e: dict) -> None:
        files = [f for f in e.get("files", []) if isinstance(f, str)]
        self.checkpoints.extend(files)
        self._log("green", f"checkpoint at step {e.get('step')}: " + ", ".join(f.rsplit('/', 1)[-1] for f in files))

    def _on_val(self, e: dict) -> None:
        step, loss = _count(e, "step"), _number(e, "loss")
        if step is None or loss is None:
            raise ValueError("a val event needs a whole-number step and a numeric loss")
        self.val = [point for point in self.val if point[0] < step] + [(step, loss)]
        self._log("magenta", f"val loss {loss:.4f} at step {step}")

    def _on_best(self, e: dict) -> None:
        step, loss = _count(e, "step"), _number(e, "loss")
        if step is None or loss is None:
            raise ValueError("a best event needs a whole-number step and a numeric loss")
        self.best = (step, loss, str(e.get("file", "")))
        self._log("green", f"best val loss so far {loss:.4f} at step {step}: kept {self.best[2].rsplit('/', 1)[-1]}")

    def _on_sample(self, e: dict) -> None:
        step, prompt, text = _count(e, "step"), e.get("prompt"), e.get("text")
        if step is None or not isinstance(prompt, str) or not isinstance(text, str):
            raise ValueError("a sample event needs a step, a prompt and a text")
        entry = self.samples.setdefault(prompt, {"first": (step, text)})
        if step <= entry["first"][0]:
            entry["first"] = (step, text)
        entry["latest"] = (step, text)

    def _on_loading(self, e: dict) -> None:
        self.loading = str(e["message"])

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
        reason = str(e.get("reason", "finished"))
        self.done_reason = reason
        self.outputs = [o for o in e.get("outputs", []) if isinstance(o, str)]
        self.state = {"finished": "done", "error": "failed"}.get(reason, "stopped")
        self.eta_s = 0.0 if self.state == "done" else None
        self._log("bold", f"run {self.state} ({reason}) at step {e.get('step', self.step)}")

    def _log(self, style: str, line: str) -> None:
        self.log.append((style, line))
        del self.log[:-_LOG_LINES]

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


def _number(event: dict, key: str) -> float | None:
    """A numeric field as a float; None when missing or of another type (a malformed line)."""
    value = event.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(event: dict, key: str) -> int | None:
    value = event.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def downsample(values: list[float], width: int) -> list[float]:
    """At most `width` points covering the whole history (each the max of its bucket), so a
    sparkline shows the run from its start to its end instead of only its last points."""
    if width <= 0 or len(values) <= width:
        return list(values)
    size = len(values) / width
    return [max(values[int(i * size):max(int((i + 1) * size), int(i * size) + 1)]) for i in range(width)]
