"""Worker threads hand results to the UI thread as Messages and never change screen state;
the wizard's steps are listed once; its state is typed without importing torch."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from conftest import wait_for
from rwkv_tui.app import RwkvTuiApp
from rwkv_tui.screens.wizard import STEPS, WizardState, screen_for

SCREENS = Path(__file__).resolve().parent.parent / "rwkv_tui" / "screens"
# Methods that change the object they are called on (containers, widgets).
MUTATORS = {"append", "extend", "insert", "remove", "pop", "clear", "update", "add", "discard", "setdefault",
            "write", "mount", "refresh", "focus"}
DOM_LOOKUPS = {"query", "query_one", "query_exactly_one"}


def _rooted_at_self(node: ast.AST) -> bool:
    """`self.a`, `self.a.b[0]`, `self.query_one(...).x`: an expression reached from `self`."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return isinstance(node, ast.Name) and node.id == "self"


def _is_thread_worker(function: ast.FunctionDef) -> bool:
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call):
            name = getattr(decorator.func, "id", getattr(decorator.func, "attr", None))
            thread = [k.value for k in decorator.keywords if k.arg == "thread"]
            if name == "work" and thread and isinstance(thread[0], ast.Constant) and thread[0].value is True:
                return True
    return False


def _assigned(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Delete):
        targets = node.targets
    else:
        return []
    flat = []
    for target in targets:
        flat += target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
    return flat


def state_changes(function: ast.FunctionDef) -> list[str]:
    """What a worker does that belongs on the UI thread, as `line: reason`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(function):
        for target in _assigned(node):
            if isinstance(target, (ast.Attribute, ast.Subscript)) and _rooted_at_self(target):
                found.append((node.lineno, f"assigns {ast.unparse(target)}"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, owner = node.func.attr, node.func.value
            if method == "call_from_thread":
                found.append((node.lineno, "call_from_thread"))
            elif method in MUTATORS and _rooted_at_self(owner):
                found.append((node.lineno, f"changes {ast.unparse(owner)} with .{method}()"))
            elif method in DOM_LOOKUPS and _rooted_at_self(owner):
                found.append((node.lineno, f"reads the DOM with .{method}()"))
    return [f"{line}: {reason}" for line, reason in sorted(found)]


def thread_workers(source: str) -> dict[str, ast.FunctionDef]:
    """`Class.method` (or `function`) -> definition, for every `@work(thread=True)` function."""
    workers = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and _is_thread_worker(item):
                    workers[f"{node.name}.{item.name}"] = item
        elif isinstance(node, ast.Module):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and _is_thread_worker(item):
                    workers[item.name] = item
    return workers


def test_thread_workers_in_the_screens_only_post_messages():
    workers, offences = set(), []
    for path in sorted(SCREENS.rglob("*.py")):
        for name, function in thread_workers(path.read_text(encoding="utf-8")).items():
            workers.add(name)
            offences += [f"{path.relative_to(SCREENS)}:{change} in {name}" for change in state_changes(function)]
    assert {"ModelScreen._read_checkpoint", "HardwareScreen.detect", "DataScreen._check_in_thread",
            "DataScreen.prepare", "ChatScreen.load", "ChatScreen.reply"} <= workers
    assert not offences, "post a Message and apply it in an on_… handler:\n" + "\n".join(offences)


def test_the_rule_above_catches_state_changes():
    bad = '''
class S:
    @work(thread=True, exclusive=True)
    def slow(self, path):
        self.state.config.data.path = path
        self.model, other = load(), 1
        self.count += 1
        self.history.append(path)
        self.app.call_from_thread(self.show, path)
        self.query_one("#x").update("…")
        report = check(path, progress=lambda d, t: self.bar.update(progress=d))

    @work(exclusive=True)
    def async_worker(self):
        self.value = 1
'''
    changes = state_changes(thread_workers(bad)["S.slow"])
    assert [c.split(":")[0] for c in changes] == ["5", "6", "7", "8", "9", "10", "10", "11"]
    assert "S.async_worker" not in thread_workers(bad)  # runs on the UI thread: may change state
    good = '''
@work(thread=True)
def slow(self, path, ctx_len):
    worker = get_current_worker()
    report = check(path, ctx_len, progress=lambda d, t: self.post_message(Progress(d, t)))
    self.post_message(Checked(report, self.folder.read_status()))
'''
    assert state_changes(thread_workers(good)["slow"]) == []


def test_the_steps_are_listed_once_in_order():
    from rwkv_tui.screens.wizard.base import WizardStep
    from rwkv_tui.screens.wizard.steps import step_index

    assert [(s.key, s.title) for s in STEPS] == [("model", "Model"), ("hardware", "Hardware"), ("method", "Method"),
                                                 ("data", "Data"), ("params", "Parameters"), ("review", "Review")]
    for index, info in enumerate(STEPS):
        screen = screen_for(info.key, WizardState())
        assert isinstance(screen, WizardStep) and type(screen).__name__ == info.screen
        assert step_index(type(screen)) == index
        assert step_index(type("Custom", (type(screen),), {})) == index  # a subclass is still that step
    with pytest.raises(KeyError, match="no wizard step 'modle'"):
        screen_for("modle", WizardState())


def test_wizard_state_fields_name_the_real_types():
    import typing

    import rwkv_tui.screens.wizard.state as state_module
    from rwkv_tui.trainer.data.check import CheckReport
    from rwkv_tui.trainer.hardware import HardwareReport
    from rwkv_tui.trainer.spec import ModelSpec

    names = {"ModelSpec": ModelSpec, "HardwareReport": HardwareReport, "CheckReport": CheckReport}
    hints = typing.get_type_hints(WizardState, globalns={**vars(state_module), **names})
    assert (hints["spec"], hints["hardware"], hints["check"]) == (ModelSpec | None, HardwareReport | None,
                                                                   CheckReport | None)


@pytest.mark.asyncio
async def test_no_gpu_report_switches_the_config_to_cpu(tmp_path, monkeypatch):
    import rwkv_tui.trainer.hardware as hardware

    monkeypatch.setattr(hardware, "detect_hardware", lambda: hardware.HardwareReport([], cpu_count=2))
    state = WizardState()
    app = RwkvTuiApp(runs_root=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(screen_for("hardware", state))
        await wait_for(pilot, lambda: state.hardware is not None)
        hw = state.config.hardware
        assert (hw.accelerator, hw.precision, hw.strategy, hw.op) == ("cpu", "fp32", "auto", "auto")
        assert "No CUDA GPU found" in str(app.screen.query_one("#hardware-note").render())


@pytest.mark.asyncio
async def test_a_superseded_checkpoint_read_does_not_overwrite_the_newer_one(tmp_path, monkeypatch):
    import rwkv_tui.trainer.checkpoint as checkpoint
    from rwkv_tui.trainer.model.init import rwkv7_spec

    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    def inspect(path: str):
        if path != "slow.pth":
            return rwkv7_spec(4, 64)
        started.set()
        release.wait(10)
        returned.set()
        return rwkv7_spec(2, 64)

    monkeypatch.setattr(checkpoint, "inspect_checkpoint", inspect)
    state = WizardState()
    app = RwkvTuiApp(runs_root=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(screen_for("model", state))
        await pilot.pause()
        app.screen.inspect("slow.pth")
        await wait_for(pilot, started.is_set)
        app.screen.inspect("fast.pth")  # exclusive: cancels the slow read, whose thread still runs on
        await wait_for(pilot, lambda: state.spec is not None)
        release.set()
        await wait_for(pilot, returned.is_set)
        await pilot.pause(0.5)  # room for a stale result to arrive, were it posted
        assert (state.spec.n_layer, state.config.model.path) == (4, "fast.pth")


@pytest.mark.asyncio
async def test_data_check_then_prepare_switches_to_binidx(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join('{"text": "User: hi %d\\n\\nAssistant: hello %d"}\n' % (i, i) for i in range(8)))
    state = WizardState()
    app = RwkvTuiApp(runs_root=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(screen_for("data", state))
        await pilot.pause()
        screen = app.screen
        screen.run_check(str(tmp_path / "missing"))
        await wait_for(pilot, lambda: "no .jsonl file" in str(screen.query_one("#data-summary").render()))
        assert state.check is None and state.config.data.path == str(tmp_path / "missing")

        screen.run_check(str(data))
        await wait_for(pilot, lambda: state.check is not None)
        assert state.check.ok and state.check.samples == 8 and state.config.data.data_type == "auto"
        assert "hello 0" in str(screen.query_one("#sample-preview").render())

        await pilot.click("#prepare")
        await wait_for(pilot, lambda: state.config.data.data_type == "binidx", timeout=60)
        assert state.config.data.path == str(tmp_path / "chat")
        assert (tmp_path / "chat.bin").exists() and (tmp_path / "chat.idx").exists()

        screen.run_check(str(tmp_path / "chat"))  # a binidx prefix: nothing to check
        await wait_for(pilot, lambda: "binidx dataset" in str(screen.query_one("#data-summary").render()))
        assert state.check is None and state.config.data.data_type == "binidx"
