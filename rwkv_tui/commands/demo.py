"""`rwkv-tui demo`: the whole flow on a tiny model and built-in facts, on any CPU, in about a minute.

The model starts from random weights and learns four made-up facts (trainer/demo.py); the run
answers the facts' questions at step 0 and at the end (`sample` events), and this command
prints both once training is over, so the before/after comes from the real model.
"""

from __future__ import annotations

import os
from pathlib import Path

# The demo model's ops (2 layers, C=128, one token at a time when sampling) are too small to
# split across threads: on 2 busy cores (load ~8) the whole demo took 28 s with the dashboard on
# one thread against 82 s on two, and 35 s against 100 s headless, the step-0 samples alone 8 s
# against 48 s (bench/results/demo-cpu-2026-12-06.json). One thread also leaves the other core
# to the dashboard. A user's own OMP_NUM_THREADS wins.
DEMO_THREADS = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="teach a tiny built-in model four made-up facts (CPU, ~1 minute, no downloads)",
        description="Creates a tiny RWKV-7 model and a four-fact chat dataset in a working folder, starts a "
                    "detached trainer and opens the live dashboard (or trains in this terminal with --no-ui), "
                    "then prints the model's answers before and after training.")
    parser.add_argument("--dir", default="rwkv-tui-demo", help="working folder (default: ./rwkv-tui-demo)")
    parser.add_argument("--no-ui", action="store_true", help="train in this terminal with a progress bar")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.demo import create_demo
    from rwkv_tui.trainer.training.folder import new_run_dir

    threads = os.environ.setdefault("OMP_NUM_THREADS", str(DEMO_THREADS))  # the detached trainer's too
    workspace = create_demo(args.dir)
    run_dir = new_run_dir(workspace.runs, "demo")
    print(f"demo folder: {workspace.folder}\n  model {workspace.model.name}, data {workspace.data.name}, "
          f"config {workspace.config.name}", flush=True)
    if args.no_ui:
        import torch

        from rwkv_tui.cli import build_parser

        if threads.isdigit() and int(threads) > 0:  # torch is loaded already (create_demo): too late for the variable
            torch.set_num_threads(int(threads))
        # Through the train command's own parser: every option it has gets its default.
        train_args = build_parser().parse_args(["train", str(workspace.config), "--run-dir", str(run_dir)])
        code = train_args.handler(train_args)
    else:
        from rwkv_tui.app import run_app
        from rwkv_tui.launch import launch_training

        launch_training(workspace.config, run_dir)
        code = run_app(attach=run_dir, runs_root=workspace.runs)
    print("\n".join(outcome_lines(workspace.model, run_dir)))
    return code


def outcome_lines(model: Path, run_dir: Path) -> list[str]:
    """What the run answered before and after, and how to chat with the result; for a run that
    is still going (the dashboard was detached), how to follow it."""
    from rwkv_tui.trainer.demo import sampled_answers
    from rwkv_tui.trainer.training.folder import RunFolder, read_all_events

    folder = RunFolder.at(run_dir)
    events = read_all_events(folder) if folder.events.exists() else []
    done = next((e for e in reversed(events) if e.get("kind") == "done"), None)
    error = next((e for e in reversed(events) if e.get("kind") == "error"), None)
    if error is not None and (done is None or done.get("reason") == "error"):
        return [f"run folder: {run_dir} (failed: {error.get('message', 'see train.log')})"]
    if done is None:
        return [f"run folder: {run_dir} (still training: `rwkv-tui attach {run_dir}`)"]
    lines = [f"run folder: {run_dir}"]
    answers = sampled_answers(events)
    if answers and answers[0].last_step > answers[0].first_step:
        lines.append(f"the model's answers, step {answers[0].first_step} → step {answers[0].last_step}:")
        for answer in answers:
            lines += [f"  {answer.prompt}", f"    before: {_one_line(answer.first)}",
                      f"    after:  {_one_line(answer.last)}"]
    adapters = [f for f in done.get("outputs", []) if f.endswith("-lora.pth")]
    if adapters:
        lines.append(f"try it: rwkv-tui chat {model} --adapter {adapters[-1]} --temperature 0")
    return lines


def _one_line(text: str, width: int = 70) -> str:
    text = " ".join(text.split()) or "(nothing)"
    return text if len(text) <= width else text[: width - 1] + "…"
