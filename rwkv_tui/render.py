"""Rich renderables shared by the CLI and the wizard."""

from __future__ import annotations

from rich.table import Table

from trainer.spec import ModelSpec, format_param_count

_VERSION_LABELS = {"x070": "RWKV-7 (x070)", "x060": "RWKV-6 (x060)", "x052": "RWKV-5 (x052)"}


def spec_rows(spec: ModelSpec) -> list[tuple[str, str]]:
    """(label, value) pairs describing a model, in the order a person reads them."""
    rows = [
        ("version", _VERSION_LABELS.get(spec.version, spec.version)),
        ("parameters", f"{format_param_count(spec.n_params)} ({spec.n_params:,})"),
        ("n_layer", str(spec.n_layer)),
        ("n_embd", str(spec.n_embd)),
        ("heads", f"{spec.n_head} × head size {spec.head_size}"),
        ("vocab_size", str(spec.vocab_size)),
        ("ffn width", str(spec.dim_ffn)),
    ]
    if spec.version == "x070":
        rows.append(("low-rank widths", f"decay {spec.d_decay}, iclr {spec.d_aaa}, "
                                        f"value {spec.d_mv}, gate {spec.d_gate}"))
    rows.append(("stored dtype", spec.dtype))
    return rows


def spec_table(spec: ModelSpec, title: str | None = None) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for label, value in spec_rows(spec):
        table.add_row(label, value)
    return table
