"""`rwkv-tui presets list|show|export`: built-in and user presets."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("presets", help="list, show or export presets",
                                   description="Presets are TOML files holding only what differs from a "
                                               "method's defaults. User presets live in the XDG config folder.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list built-in and user presets").set_defaults(handler=run_list)
    show = actions.add_parser("show", help="print a preset's full settings (defaults included)")
    show.add_argument("name")
    show.set_defaults(handler=run_show)
    export = actions.add_parser("export", help="write a preset's TOML to a file (to edit or share)")
    export.add_argument("name")
    export.add_argument("out")
    export.add_argument("--full", action="store_true", help="write every setting, not only the changes")
    export.set_defaults(handler=run_export)


def run_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rwkv_tui.trainer.presets import list_presets

    table = Table("name", "method", "source", "description")
    for p in list_presets():
        table.add_row(p.name, p.method, p.source, p.description)
    Console().print(table)
    return 0


def run_show(args) -> int:
    from rwkv_tui.trainer.config import dumps_config
    from rwkv_tui.trainer.presets import load_preset

    print(dumps_config(load_preset(args.name), only_changes=False), end="")
    return 0


def run_export(args) -> int:
    from rwkv_tui.trainer.config import save_config
    from rwkv_tui.trainer.presets import load_preset

    path = save_config(load_preset(args.name), args.out, only_changes=not args.full)
    print(f"wrote {path}")
    return 0
