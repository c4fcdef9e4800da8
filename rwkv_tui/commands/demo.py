"""`rwkv-tui demo`: the whole flow on a tiny model and built-in data, on any CPU, in about a minute."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="train a tiny built-in model on built-in chat data (CPU, ~1 minute, no downloads)",
        description="Creates a tiny RWKV-7 model and a small chat dataset in a working folder, starts a "
                    "detached trainer and opens the live dashboard (or trains in this terminal with --no-ui).")
    parser.add_argument("--dir", default="rwkv-tui-demo", help="working folder (default: ./rwkv-tui-demo)")
    parser.add_argument("--no-ui", action="store_true", help="train in this terminal with a progress bar")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.demo import create_demo
    from rwkv_tui.trainer.training.folder import new_run_dir

    workspace = create_demo(args.dir)
    run_dir = new_run_dir(workspace.runs, "demo")
    print(f"demo folder: {workspace.folder}\n  model {workspace.model.name}, data {workspace.data.name}, "
          f"config {workspace.config.name}")
    if args.no_ui:
        from argparse import Namespace

        from rwkv_tui.commands.train import run as train

        code = train(Namespace(config=str(workspace.config), overrides=[], run_dir=str(run_dir), resume=None,
                               quiet=False))
    else:
        from rwkv_tui.app import run_app
        from rwkv_tui.launch import launch_training

        launch_training(workspace.config, run_dir)
        code = run_app(attach=run_dir, runs_root=workspace.runs)
    print(f"run folder: {run_dir}\ntry it: rwkv-tui chat {workspace.model} --adapter "
          f"{run_dir / 'checkpoints' / 'epoch2-lora.pth'}")
    return code
