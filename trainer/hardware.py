"""What GPUs this machine has: names, VRAM (total and free), driver and CUDA versions.

NVML (`pynvml`) answers without initialising CUDA in this process and knows the driver;
torch is the fallback. Neither is required: a machine without a GPU gets an honest empty
list and the wizard offers CPU mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


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
