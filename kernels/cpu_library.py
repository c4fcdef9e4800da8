"""The CPU kernels (kernels/cpu/*.c) as one shared library, built on first use and loaded with ctypes.

Plain C with no torch headers, so the system C compiler ($CC, cc, gcc or clang) builds it in about
a second, into the kernel cache (RWKV_TUI_KERNEL_CACHE, as the CUDA op) keyed by the sources, the
compiler and this CPU's instruction set. The kernels run on the calling thread. Where no
compiler works, every user falls back to torch ops and says why (`cpu_library()` returns the
reason instead of the library).
RWKV_TUI_CPU_KERNEL=0 turns the library off (e.g. to compare against the torch ops).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from rwkv_tui.kernels.errors import KernelUnavailableError

log = logging.getLogger(__name__)
SOURCES = sorted((Path(__file__).resolve().parent / "cpu").glob("*.c"))
# Reassociation lets the compiler vectorize the dot products; nothing here depends on errno,
# signed zeros or traps.
FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
         "-fno-signed-zeros", "-ffp-contract=fast"]
NATIVE = "-march=native"
_INT64, _POINTER = ctypes.c_int64, ctypes.c_void_p
SIGNATURES = {  # function -> argument types (all return void)
    "wkv7_forward": [_INT64] * 4 + [_POINTER] * 8,
    "rows_matvec": [_INT64] * 2 + [_POINTER] * 3,
    "rwkv7_block_one": [ctypes.POINTER(_INT64), ctypes.c_float, ctypes.c_float, ctypes.POINTER(_POINTER)]
                       + [_POINTER] * 11,
}


def _compiler() -> str | None:
    wanted = os.environ.get("CC")
    if wanted:
        return shutil.which(wanted)
    return next((found for name in ("cc", "gcc", "clang") if (found := shutil.which(name))), None)


def _cpu_features() -> str:
    """This CPU's instruction-set flags: a library built with -march=native is only for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_path(compiler: str) -> Path:
    root = os.environ.get("RWKV_TUI_KERNEL_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rwkv-tui" / "kernels")
    parts = [*(source.read_bytes() for source in SOURCES), compiler.encode(), " ".join(FLAGS).encode(),
             platform.machine().encode(), _cpu_features().encode()]
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return Path(root) / f"cpu-{digest}.so"


def _build(compiler: str, target: Path) -> None:
    """Compile into a temporary file beside `target`, then rename: processes building at once
    never load a half-written library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        errors = ""
        for extra in ([NATIVE], []):  # some compilers or CPUs have no -march=native
            done = subprocess.run([compiler, *FLAGS, *extra, "-o", partial, *map(str, SOURCES)],
                                  capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                os.replace(partial, target)
                return
            errors = done.stderr.strip()
        raise KernelUnavailableError(f"building the CPU kernels with {compiler} failed: {errors[-1500:]}")
    finally:
        Path(partial).unlink(missing_ok=True)


@functools.cache
def _load() -> ctypes.CDLL | str:
    compiler = _compiler()
    if compiler is None:
        return "no C compiler found to build the CPU kernels (install gcc or clang, or set CC)"
    target = library_path(compiler)
    try:
        if not target.exists():
            log.info("building the CPU kernels in %s", target.parent)
            _build(compiler, target)
        library = ctypes.CDLL(str(target))
    except (KernelUnavailableError, OSError, subprocess.SubprocessError) as error:
        return str(error)
    for name, argtypes in SIGNATURES.items():
        function = getattr(library, name)
        function.restype, function.argtypes = None, argtypes
    return library


def cpu_kernels_off() -> bool:
    """RWKV_TUI_CPU_KERNEL=0: the C kernels and the oneDNN products (cpu_linear.py) stay unused."""
    return os.environ.get("RWKV_TUI_CPU_KERNEL", "1") == "0"


def cpu_library() -> ctypes.CDLL | str:
    """The loaded library (built on the first call in this process), or why there is none."""
    if cpu_kernels_off():
        return "turned off by RWKV_TUI_CPU_KERNEL=0"
    return _load()


def pointer(tensor: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr())
