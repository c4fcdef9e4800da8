"""Presets: named RunConfigs stored as TOML holding only what differs from the method's defaults.

Built-in presets ship in the `presets` package; user presets live under the XDG config
directory (`~/.config/rwkv-tui/presets`, or `$RWKV_TUI_CONFIG_DIR/presets`). A user preset
with a built-in's name shadows it. Presets are data (TOML), never code.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.config import RunConfig, load_config, save_config
from rwkv_tui.trainer.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PresetInfo:
    name: str
    source: str  # "built-in" | "user"
    path: Path
    description: str
    method: str


def builtin_dir() -> Path:
    from rwkv_tui.presets import BUILTIN_DIR

    return BUILTIN_DIR


def user_dir() -> Path:
    root = os.environ.get("RWKV_TUI_CONFIG_DIR")
    if root:
        return Path(root) / "presets"
    from platformdirs import user_config_dir

    return Path(user_config_dir("rwkv-tui")) / "presets"


def _info(path: Path, source: str) -> PresetInfo:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        data = {}
    return PresetInfo(path.stem, source, path, data.get("preset", {}).get("description", ""),
                      data.get("method", {}).get("name", "lora"))


def list_presets() -> list[PresetInfo]:
    found: dict[str, PresetInfo] = {}
    for source, directory in (("built-in", builtin_dir()), ("user", user_dir())):
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                found[path.stem] = _info(path, source)
    return sorted(found.values(), key=lambda p: p.name)


def find_preset(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    for info in list_presets():
        if info.name == str(name_or_path):
            return info.path
    names = ", ".join(p.name for p in list_presets())
    raise ConfigError(f"no preset named {str(name_or_path)!r}", hint=f"presets: {names}")


def load_preset(name_or_path: str | Path) -> RunConfig:
    return load_config(find_preset(name_or_path))


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a usable preset name",
                          hint="use letters, digits, '.', '_' or '-' (up to 64 characters)")


def save_user_preset(name: str, config: RunConfig, description: str = "", overwrite: bool = False) -> Path:
    _check_name(name)
    path = user_dir() / f"{name}.toml"
    if path.exists() and not overwrite:
        raise ConfigError(f"a user preset named {name!r} exists", path=path, hint="choose another name")
    return save_config(config, path, only_changes=True, header={"description": description} if description else None)


def duplicate_preset(name: str, new_name: str) -> Path:
    info = next((p for p in list_presets() if p.name == name), None)
    if info is None:
        find_preset(name)  # raises with the list of names
    return save_user_preset(new_name, load_config(info.path), info.description)


def delete_user_preset(name: str) -> None:
    path = user_dir() / f"{name}.toml"
    if not path.exists():
        raise ConfigError(f"no user preset named {name!r}", hint="built-in presets cannot be deleted")
    path.unlink()
