"""GPU detection: NVML first, torch second, an honest empty list on a CPU box."""

from __future__ import annotations

import sys
import types

import rwkv_tui.trainer.hardware as hw


def fake_pynvml(fail_init=False):
    module = types.ModuleType("pynvml")

    class Memory:
        total, free = 80 * 1024**3, 79 * 1024**3

    def init():
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    module.nvmlInit = init
    module.nvmlShutdown = lambda: None
    module.nvmlSystemGetDriverVersion = lambda: b"560.35.03"
    module.nvmlSystemGetCudaDriverVersion = lambda: 12060
    module.nvmlDeviceGetCount = lambda: 2
    module.nvmlDeviceGetHandleByIndex = lambda i: i
    module.nvmlDeviceGetName = lambda h: f"NVIDIA H100 #{h}"
    module.nvmlDeviceGetMemoryInfo = lambda h: Memory()
    module.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    return module


def test_nvml_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    report = hw.detect_hardware()
    assert report.source == "nvml" and len(report.gpus) == 2
    gpu = report.gpus[1]
    assert gpu.name == "NVIDIA H100 #1" and gpu.total_bytes == 80 * 1024**3 and gpu.driver == "560.35.03"
    assert gpu.cuda == "12.6" and gpu.compute_capability == "9.0" and gpu.supports_bf16


def test_nvml_absent_falls_back_to_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(fail_init=True))
    monkeypatch.setattr(hw, "_from_torch", lambda: [hw.GpuInfo(0, "Fake RTX 4090", 24 * 1024**3, 20 * 1024**3,
                                                               None, "12.4", "8.9")])
    report = hw.detect_hardware()
    assert report.source == "torch" and report.gpus[0].name == "Fake RTX 4090"


def test_cpu_only_machine_is_reported_honestly(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    monkeypatch.setattr(hw, "_from_torch", lambda: [])
    report = hw.detect_hardware()
    assert not report.has_gpu and report.source == "none" and report.cpu_count >= 1
    assert hw.GpuInfo(0, "old", 1, 1, compute_capability="7.5").supports_bf16 is False
