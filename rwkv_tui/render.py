"""Rich renderables shared by the CLI and the wizard."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from rwkv_tui.trainer.spec import ModelSpec, format_param_count

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
    elif spec.version == "x060":
        rows.append(("low-rank widths", f"token-shift mix {spec.d_mix}, decay {spec.d_decay}"))
    rows.append(("stored dtype", spec.dtype))
    return rows


def spec_table(spec: ModelSpec, title: str | None = None) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for label, value in spec_rows(spec):
        table.add_row(label, value)
    return table


def _records_unit(path) -> str:
    """jsonl is read by line, every other record file (parquet, csv, …) by row."""
    from rwkv_tui.trainer.data.records import JSONL, file_kind

    try:
        return "lines" if file_kind(path) == JSONL else "rows"
    except OSError:  # the file went away since the check: the check's own unit is the usual one
        return "lines"


def data_report(report) -> Group:
    """A `CheckReport` as a person reads it: summary, then problems with line numbers."""
    from rich.text import Text

    summary = Table(show_header=False, title=f"{report.path}", title_justify="left")
    summary.add_column(style="bold cyan")
    summary.add_column()
    summary.add_row("samples", f"{report.samples:,} of {report.lines:,} {_records_unit(report.path)}")
    summary.add_row("formats", ", ".join(f"{n:,} {f}" for f, n in sorted(report.formats.items())) or "–")
    stats = report.token_stats()
    if stats:
        summary.add_row("tokens", f"min {stats['min']:,} · median {stats['median']:,} · p95 {stats['p95']:,} · "
                                  f"max {stats['max']:,} · total {report.total_tokens:,}")
    summary.add_row(f"over ctx_len {report.ctx_len}", f"{report.over_ctx_len:,} samples would be cut")
    summary.add_row("duplicates", f"{report.duplicates:,}")
    summary.add_row("steps per epoch", f"{report.steps_per_epoch:,} at micro_bsz {report.micro_bsz} "
                                       "(one document per sample)")
    n_err = len(report.errors) + report.suppressed.get("error", 0)
    n_warn = len(report.warnings) + report.suppressed.get("warning", 0)
    verdict = Text(f"{n_err} error(s), {n_warn} warning(s)", style="bold red" if n_err else
                   ("bold yellow" if n_warn else "bold green"))
    lines = Text()
    for issue in report.issues:
        style = "red" if issue.severity == "error" else "yellow"
        where = issue.location() if issue.line else "file"
        lines.append(f"{issue.severity:<7} {where}: ", style=f"bold {style}")
        lines.append(issue.message + "\n")
        if issue.excerpt:
            lines.append(f"          {issue.excerpt}\n", style="dim")
        if issue.hint:
            lines.append(f"          fix: {issue.hint}\n", style="italic")
    hidden = sum(report.suppressed.values())
    if hidden:
        lines.append(f"… and {hidden} more of the same kinds\n", style="dim")
    if report.cancelled:
        lines.append("check cancelled: the figures cover the lines read so far\n", style="bold yellow")
    return Group(summary, verdict, lines)
