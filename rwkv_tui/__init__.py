"""rwkv-tui: a terminal wizard and embedded trainer for fine-tuning RWKV models."""

__version__ = "0.1.0"


def refuse_bare_import(module_name: str) -> None:
    """Stop `import kernels` (or trainer, presets) from loading a repository folder.

    The folders install as rwkv_tui.trainer, rwkv_tui.kernels and rwkv_tui.presets. With the
    repository root on sys.path (`python -c` there) a bare import would load a second copy of
    every module (a second autotune cache, second config classes), and shadow other packages of that name
    (bitsandbytes tries Hugging Face's `kernels`); so it fails as if the folder were not there.
    """
    if not module_name.startswith("rwkv_tui."):
        raise ModuleNotFoundError(f"No module named {module_name!r} (the repository folder {module_name}/ "
                                  f"is rwkv_tui.{module_name}: import it by that name)", name=module_name)
