"""What GPUs this machine has: names, VRAM (total and free), driver and CUDA versions.

NVML (`pynvml`) answers without initialising CUDA in this process and knows the driver;
torch is the fallback. Neither is required: a machine without a GPU gets an honest empty
list and the wizard offers CPU mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    driver: str | None = None
    cuda: str | None = None
    compute_capability: str | None = None

    @property
    def supports_bf16(self) -> bool:
        if self.compute_capability is None:
            return True
        return int(self.compute_capability.split(".")[0]) >= 8  # Ampere and newer


@dataclass
class HardwareReport:
    gpus: list[GpuInfo] = field(default_factory=list)
    cpu_count: int = 1
    ram_bytes: int | None = None
    torch_version: str | None = None
    source: str = "none"  # "nvml" | "torch" | "none"

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


def _from_nvml() -> list[GpuInfo] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError when no driver is loaded: "no GPU", not a crash
        return None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        try:
            cuda_int = pynvml.nvmlSystemGetCudaDriverVersion()
            cuda = f"{cuda_int // 1000}.{cuda_int % 1000 // 10}"
        except Exception:
            cuda = None
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability = f"{major}.{minor}"
            except Exception:
                capability = None
            gpus.append(GpuInfo(index, name.decode() if isinstance(name, bytes) else name,
                                int(memory.total), int(memory.free), driver, cuda, capability))
        return gpus
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def detect_gpus_nvml() -> list[GpuInfo] | None:
    """NVML's view only (None without NVML): cheap, and never touches CUDA in this process."""
    return _from_nvml()


def _from_torch() -> list[GpuInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        gpus.append(GpuInfo(index, props.name, int(total), int(free), None, torch.version.cuda,
                            f"{props.major}.{props.minor}"))
    return gpus


def detect_gpus() -> list[GpuInfo]:
    gpus = _from_nvml()
    return gpus if gpus is not None else _from_torch()


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a run may take: free memory on its GPU (None when it trains on the CPU) and the
    RAM this process may still use (None when unknown)."""

    device: str  # what to name in a message: "GPU 0 (NVIDIA H100)", "CPU RAM"
    gpu_free_bytes: int | None
    ram_available_bytes: int | None

    @property
    def on_gpu(self) -> bool:
        return self.gpu_free_bytes is not None


def memory_budget(accelerator: str, devices: int, cuda_available: bool) -> MemoryBudget:
    """What the chosen device has free: the GPU with the least free memory among the `devices`
    used, or, on the CPU, the available RAM."""
    ram = available_ram_bytes()
    gpus = []
    if accelerator != "cpu" and cuda_available:
        nvml = _from_nvml()
        gpus = (visible_gpus(nvml) if nvml is not None else _from_torch())[:max(devices, 1)]
    if not gpus:
        return MemoryBudget("CPU RAM", None, ram)
    tightest = min(gpus, key=lambda gpu: gpu.free_bytes)
    return MemoryBudget(f"GPU {tightest.index} ({tightest.name})", tightest.free_bytes, ram)


def visible_gpus(gpus: list[GpuInfo], environ: dict[str, str] | None = None) -> list[GpuInfo]:
    """The GPUs this process may use: NVML lists every GPU whatever CUDA_VISIBLE_DEVICES says (torch
    sees only those). The wizard launches with CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML's order, so the
    variable's numbers are NVML's indices; UUIDs or MIG names are not resolved (all GPUs kept)."""
    environ = os.environ if environ is None else environ
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return gpus
    wanted = [item.strip() for item in value.split(",") if item.strip()]
    if not all(item.isdigit() for item in wanted):
        return gpus
    by_index = {gpu.index: gpu for gpu in gpus}
    return [by_index[int(item)] for item in wanted if int(item) in by_index]


def available_ram_bytes() -> int | None:
    """RAM this process can still allocate: the kernel's MemAvailable, capped by the cgroup's
    limit (a container is OOM-killed at its limit, whatever the host has free)."""
    candidates = [n for n in (_meminfo_available(), _cgroup_headroom()) if n is not None]
    return min(candidates) if candidates else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_headroom() -> int | None:
    """cgroup v2: memory.max minus memory.current (None without a limit)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max" or not limit.isdigit():
        return None
    return max(int(limit) - used, 0)


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def detect_hardware() -> HardwareReport:
    nvml = _from_nvml()
    gpus, source = (nvml, "nvml") if nvml is not None else (_from_torch(), "torch")
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    return HardwareReport(gpus, os.cpu_count() or 1, _ram_bytes(), torch_version, source if gpus else "none")
