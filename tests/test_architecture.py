"""The house rules of DESIGN.md §1, checked: one installed namespace (rwkv_tui), dependencies
pointing one way (app -> rwkv_tui.trainer -> rwkv_tui.kernels), no Textual in the engine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE_FOLDERS = ("trainer", "kernels", "presets")
# `from trainer…` or `import [a, ]trainer…`, also inside code strings ("import sys, trainer");
# `from rwkv_tui import trainer` is fine.
BARE_FROM = re.compile(r"(?:^|[\s\"'(;])from\s+(?:trainer|kernels|presets)\b", re.M)
BARE_IMPORT = re.compile(r"(?:^|[\s\"'(;])(?<!from )import\s+(?:[\w.]+(?:\s+as\s+\w+)?\s*,\s*)*(?:trainer|kernels|presets)\b",
                         re.M)
FROM_MODULE_BEFORE = re.compile(r"from\s+[\w.]+\s*$")


def bare_imports(text: str) -> list[tuple[int, str]]:
    """(line, statement) of every import that names a repository folder without rwkv_tui."""
    found = [m for m in BARE_FROM.finditer(text)]
    for match in BARE_IMPORT.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        if not FROM_MODULE_BEFORE.search(text[line_start:match.start() + 1]):
            found.append(match)
    return sorted((text.count("\n", 0, m.start()) + 1, m.group(0).strip()) for m in found)


SKIPPED_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", "node_modules"}


def _repository_files(*suffixes: str):
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if parts & SKIPPED_DIRS or any(p.endswith(".egg-info") for p in parts):
            continue
        # rwkv_tui/trainer etc. are symlinks to the folders scanned anyway
        if path.suffix in suffixes and path.is_file() and not any(
                (ROOT / "rwkv_tui" / f) in path.parents for f in ENGINE_FOLDERS):
            yield path


def test_import_contracts_hold():
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed")
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_bare_trainer_kernels_or_presets_import_anywhere():
    offenders = []
    for path in _repository_files(".py", ".md"):
        if path == Path(__file__).resolve():
            continue  # its examples below are bare on purpose
        for line, statement in bare_imports(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {statement}")
    assert not offenders, "use the rwkv_tui.* names:\n" + "\n".join(offenders)


def test_the_rule_above_catches_a_bare_import():
    assert bare_imports("x = 1\n    from kernels.dispatch import wkv7\n") == [(2, "from kernels")]
    assert bare_imports("import trainer\n") and bare_imports("import presets.x as p\n")
    assert bare_imports('code = "import sys, trainer.model"') and bare_imports("(import kernels; x)")
    assert bare_imports("import numpy as np, kernels\n")
    assert not bare_imports("from rwkv_tui.kernels import wkv7\nfrom rwkv_tui import kernels\n"
                            "import trainers\nImporting `trainer`\nimport rwkv_tui.trainer as trainer\n")


def test_engine_folders_are_symlinked_into_the_package():
    for name in ENGINE_FOLDERS:
        link = ROOT / "rwkv_tui" / name
        assert link.is_symlink() and Path(link.readlink()) == Path("..") / name, link


def test_kernels_import_nothing_but_torch():
    for path in (ROOT / "kernels").glob("*.py"):
        for module in re.findall(r"^\s*(?:from|import)\s+(rwkv_tui[\w.]*)", path.read_text(), re.M):
            assert module == "rwkv_tui" or module.startswith("rwkv_tui.kernels"), (path, module)


def test_a_bare_folder_import_from_the_repository_root_fails_cleanly():
    result = subprocess.run([sys.executable, "-c", "__import__('kernels')"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr
    assert "rwkv_tui.kernels" in result.stderr  # says what to import instead


def test_bitsandbytes_no_longer_finds_our_kernels_folder():
    pytest.importorskip("bitsandbytes")
    result = subprocess.run([sys.executable, "-c", "import bitsandbytes"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "cannot import name 'get_kernel'" not in result.stderr, result.stderr


STAND_INS = {
    # Hugging Face's `kernels` (what bitsandbytes imports) and Coqui's `trainer`, in miniature
    "kernels/__init__.py": "def get_kernel(repo_id, version=None):\n    raise RuntimeError('stand-in')\n",
    "trainer/__init__.py": "class Trainer:\n    pass\n",
    "presets/__init__.py": "NAMES = []\n",
}


def test_foreign_kernels_and_trainer_packages_first_on_the_path_change_nothing(tmp_path):
    from conftest import write_tiny_checkpoint

    site = tmp_path / "site"
    for relative, text in STAND_INS.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
    model, _ = write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=64, vocab_size=65536, head_size=16)
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"text": f"User: {a} plus 1?\n\nAssistant: {a + 1}."}) + "\n"
                            for a in range(12)))
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}  # ahead of site-packages
    kernels = subprocess.run([sys.executable, "-m", "rwkv_tui", "kernels", "--device", "cpu"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
    assert kernels.returncode == 0, kernels.stdout + kernels.stderr
    assert "torch" in kernels.stdout
    train = subprocess.run(
        [sys.executable, "-m", "rwkv_tui", "train", str(ROOT / "presets" / "demo-cpu.toml"),
         "--set", f"model.path={model}", "--set", f"data.path={data}", "--set", "epochs.epoch_steps=2",
         "--set", "epochs.epoch_count=1", "--set", "data.ctx_len=32", "--run-dir", str(tmp_path / "run"), "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stdout + train.stderr
    assert (tmp_path / "run" / "checkpoints" / "final-merged.pth").exists()
    probe_code = "import kernels as k, trainer as t; print(k.__file__, t.__file__)"  # the stand-ins, by name
    probe = subprocess.run([sys.executable, "-c", probe_code],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert str(site) in probe.stdout  # the stand-ins really were the ones on the path


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package_with_cuda_sources_and_presets(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "src"  # a copy, so the build leaves no build/ folder in the checkout
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    for relative in filter(None, tracked.stdout.split("\0")):
        src, dst = ROOT / relative, source / relative
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(src.readlink())
        elif src.is_file():
            shutil.copy2(src, dst)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    wheel, = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"rwkv_tui"}
    for expected in ["rwkv_tui/kernels/cuda/wkv7.cu", "rwkv_tui/presets/demo-cpu.toml", "rwkv_tui/app.tcss",
                     "rwkv_tui/trainer/__init__.py", "rwkv_tui/kernels/dispatch.py"]:
        assert expected in names, expected
    assert any(n.startswith("rwkv_tui/kernels/cuda/") and n.endswith(".cpp") for n in names)
