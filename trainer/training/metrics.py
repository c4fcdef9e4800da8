"""Running numbers the dashboard shows: smoothed loss, throughput, ETA, memory."""

from __future__ import annotations

import math
import resource
import time


class SmoothedValue:
    """Bias-corrected exponential moving average (so early values are not pulled to 0)."""

    def __init__(self, beta: float = 0.9, value: float = 0.0, count: int = 0) -> None:
        self.beta, self.value, self.count = beta, value, count

    def update(self, x: float) -> float:
        self.count += 1
        self.value = self.beta * self.value + (1 - self.beta) * x
        return self.smoothed

    @property
    def smoothed(self) -> float:
        if self.count == 0:
            return math.nan
        return self.value / (1 - self.beta**self.count)

    def state_dict(self) -> dict:
        return {"beta": self.beta, "value": self.value, "count": self.count}

    @classmethod
    def from_state(cls, state: dict) -> "SmoothedValue":
        return cls(**state)


class Throughput:
    """Tokens per second and seconds per step over the last steps, and the ETA they imply."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._times: list[float] = []
        self._tokens: list[int] = []

    def record(self, tokens: int, now: float | None = None) -> None:
        self._times.append(time.perf_counter() if now is None else now)
        self._tokens.append(tokens)
        if len(self._times) > self.window + 1:
            self._times.pop(0)
            self._tokens.pop(0)

    def start(self, now: float | None = None) -> None:
        self._times = [time.perf_counter() if now is None else now]
        self._tokens = [0]

    @property
    def seconds_per_step(self) -> float | None:
        if len(self._times) < 2:
            return None
        return (self._times[-1] - self._times[0]) / (len(self._times) - 1)

    @property
    def tokens_per_second(self) -> float | None:
        if len(self._times) < 2 or self._times[-1] == self._times[0]:
            return None
        return sum(self._tokens[1:]) / (self._times[-1] - self._times[0])

    def eta_seconds(self, remaining_steps: int) -> float | None:
        per_step = self.seconds_per_step
        return None if per_step is None else per_step * remaining_steps


class Every:
    """True at most once per `seconds` (the first call included): throttles work off the hot path."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.seconds:
            self._last = now
            return True
        return False


_gpu_poll = Every(seconds=5.0)
_last_gpus: list[dict[str, float]] | None = None


def memory_snapshot(device) -> dict[str, float]:
    """GPU memory (allocated, peak, reserved, total) in GB on CUDA; process peak RSS elsewhere.
    No CPU–GPU sync: the caching allocator keeps its counters on the host."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        gb = 1024**3
        total = torch.cuda.get_device_properties(device).total_memory
        snapshot = {
            "vram_gb": torch.cuda.memory_allocated(device) / gb,
            "vram_peak_gb": torch.cuda.max_memory_allocated(device) / gb,
            "vram_reserved_gb": torch.cuda.memory_reserved(device) / gb,
            "vram_total_gb": total / gb,
        }
        global _last_gpus
        if _gpu_poll.ready():  # NVML init + queries: every few seconds, not every step
            _last_gpus = all_gpus_used()
        if _last_gpus:
            snapshot["gpus"] = _last_gpus
        return snapshot
    return {"ram_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def all_gpus_used() -> list[dict[str, float]] | None:
    """Used/total memory of every GPU (multi-GPU runs), read through NVML so that no CUDA
    context is created on the other devices; None without NVML."""
    from rwkv_tui.trainer.hardware import detect_gpus_nvml

    gpus = detect_gpus_nvml()
    if not gpus:
        return None
    gb = 1024**3
    return [{"index": g.index, "used_gb": (g.total_bytes - g.free_bytes) / gb, "total_gb": g.total_bytes / gb}
            for g in gpus]
