"""The small exception family every user-facing failure belongs to.

Each error carries where the problem is (file, line, field) and a hint saying what
to do. The CLI prints them in a line or two without a traceback and exits 2; the
wizard shows them next to the field. Any other exception is a bug.
"""

from __future__ import annotations

from pathlib import Path


class RwkvTuiError(Exception):
    """Base class: a problem the user can fix, described so they can fix it."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.hint = hint

    def location(self) -> str:
        parts = []
        if self.path:
            parts.append(self.path if self.line is None else f"{self.path}:{self.line}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts)

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class CheckpointError(RwkvTuiError):
    """A model, adapter or state file that cannot be used."""


class UnsupportedModelError(CheckpointError):
    """A recognised checkpoint of an architecture this version cannot train yet."""


class DataError(RwkvTuiError):
    """Training data that is malformed or does not fit the model."""


class ConfigError(RwkvTuiError):
    """A RunConfig, preset or command-line setting that is invalid."""
