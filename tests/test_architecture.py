"""The house rules of DESIGN.md §1, checked: rwkv_tui -> trainer -> kernels, no Textual in the engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed")
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kernels_import_nothing_but_torch():
    for path in (ROOT / "kernels").glob("*.py"):
        text = path.read_text()
        assert "import trainer" not in text and "from trainer" not in text, path
        assert "rwkv_tui" not in text, path
