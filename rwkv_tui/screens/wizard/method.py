"""Step 3: methods × quantization with the VRAM each needs, and whether it fits the GPU."""

from __future__ import annotations

import copy

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Input, Label, Static

from rwkv_tui.screens.wizard.base import WizardStep
from rwkv_tui.trainer.config import METHODS, QUANTS, RunConfig

GB = 1024**3
WHEN_TO_USE = {
    "full": "every weight trains: best quality, most memory; small models or big GPUs",
    "lora": "small adapters on the big matrices: the usual choice",
    "pissa": "LoRA started from the principal components: converges faster than LoRA",
    "miss": "one shared block per matrix: fewer parameters than LoRA, similar quality",
    "lisa": "a few random layers at a time: near full quality with less memory",
    "state": "only the initial RNN state: tiny files, a 'deep prompt' for style and role",
}
def available_quants() -> tuple[str, ...]:
    """int8/nf4 need bitsandbytes (the gpu extra); without it only bf16/fp32 rows can be chosen."""
    import importlib.util

    return QUANTS if importlib.util.find_spec("bitsandbytes") else ("none",)


def method_rows(state, ctx_len: int, micro_bsz: int) -> list[dict]:
    """Every (method, quant) with its estimate; `fits` is None when there is no GPU to fit."""
    from rwkv_tui.trainer.peft.catalog import METHOD_INFO
    from rwkv_tui.trainer.vram import estimate

    rows = []
    free = state.free_vram
    for name in METHODS:
        for quant in QUANTS:
            if quant != "none" and not METHOD_INFO[name].supports_quantization:
                continue  # methods that train the base weights have no quantized variant
            config = RunConfig.for_method(name)
            config.hardware = copy.deepcopy(state.config.hardware)
            config.data.ctx_len, config.data.micro_bsz = ctx_len, micro_bsz
            chunk = state.config.data.chunk_ctx  # infctx: memory follows the chunk
            config.data.chunk_ctx = chunk if 0 < chunk < ctx_len and ctx_len % chunk == 0 else 0
            config.method.quant = quant
            gb = estimate(state.spec, config).total / GB if state.spec is not None else None
            rows.append({"method": name, "quant": quant, "gb": gb, "available": quant in available_quants(),
                         "fits": None if free is None or gb is None else gb * GB <= free})
    return rows


def best_choice(rows: list[dict]) -> dict:
    """LoRA if it fits, else the lightest that fits, else state tuning (preference order)."""
    order = ["lora", "state", "pissa", "miss", "lisa", "full"]
    usable = [r for r in rows if r["available"] and r["fits"] is not False]
    for name in order:
        for row in usable:
            if row["method"] == name:
                return row
    return next(r for r in rows if r["method"] == "state" and r["quant"] == "none")


LONGEST_PROPOSED_CTX = 1 << 16  # documents longer than this are still cut


def chunking_proposal(state) -> tuple[int, int, str] | None:
    """(ctx_len, chunk_ctx, why) where training in chunks (infctx) helps: the data check found
    documents over ctx_len (a ctx_len that holds the longest, in chunks that fit the GPU), or the
    chosen method does not fit the GPU at this ctx_len but does in chunks. None otherwise."""
    from rwkv_tui.trainer.vram import estimate, fitting_chunk_ctx

    data, spec, free = state.config.data, state.spec, state.free_vram
    if spec is None or data.chunk_ctx:
        return None
    check = state.check
    longest = (check.token_stats().get("max", 0) if check is not None and check.over_ctx_len else 0)
    ctx_len = min(1 << (longest - 1).bit_length(), LONGEST_PROPOSED_CTX) if longest else data.ctx_len
    config = copy.deepcopy(state.config)
    config.data.ctx_len = ctx_len
    if free is None:  # no GPU to fit: long documents alone are the reason, in chunks of 1024 or less
        chunk = min(1024, ctx_len // 2)
        return (ctx_len, chunk, f"{check.over_ctx_len} documents are longer than ctx_len {data.ctx_len}: "
                                f"train them whole as ctx_len {ctx_len} in chunks of {chunk}") if longest else None
    if not longest and estimate(spec, config).total <= free:
        return None  # fits as it is
    chunk = fitting_chunk_ctx(spec, config, free)
    if not chunk:
        return None
    why = f"{check.over_ctx_len} documents are longer than ctx_len {data.ctx_len}: " if longest else ""
    return ctx_len, chunk, f"{why}ctx_len {ctx_len} in chunks of {chunk} fits in {free / GB:.0f} GB"


class MethodScreen(WizardStep):
    MAIN_INPUT = "#methods"  # the table: arrows pick, Enter chooses, Enter on the chosen row goes on

    def body(self) -> ComposeResult:
        data = self.state.config.data
        yield Static("Pick how to fine-tune (Enter on a row). Estimates are for one GPU with the settings below; "
                     "● marks the choice, preselected as the best that fits.", classes="help")
        with Horizontal(classes="inline-fields"):
            yield Label("ctx_len")
            yield Input(str(data.ctx_len), id="ctx-len", type="integer")
            yield Label("micro_bsz")
            yield Input(str(data.micro_bsz), id="micro-bsz", type="integer")
        yield DataTable(id="methods", cursor_type="row")
        yield Static(id="method-help")
        with Horizontal(id="chunking", classes="inline-fields"):
            proposal = Static(id="chunk-proposal")
            proposal.styles.width, proposal.styles.padding = "1fr", (1, 1, 0, 0)
            yield proposal
            yield Button("Train in chunks", id="apply-chunking")

    def on_mount(self) -> None:
        table = self.query_one("#methods", DataTable)
        table.add_columns(" ", "method", "quant", "VRAM", "fits", "when to use")
        self.rows = method_rows(self.state, self.state.config.data.ctx_len, self.state.config.data.micro_bsz)
        self._choose(best_choice(self.rows))
        self.refresh_table()

    def chosen_index(self) -> int:
        m = self.state.config.method
        return next(i for i, r in enumerate(self.rows) if (r["method"], r["quant"]) == (m.name, m.quant))

    def refresh_table(self) -> None:
        data = self.state.config.data
        self.rows = method_rows(self.state, data.ctx_len, data.micro_bsz)
        chosen = self.chosen_index()
        table = self.query_one("#methods", DataTable)
        table.clear()
        for i, row in enumerate(self.rows):
            gb = f"{row['gb']:.1f} GB" if row["gb"] is not None else "?"
            fits = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "CPU"}[row["fits"]]
            if not row["available"]:
                fits = "[dim]needs bnb[/dim]"
            table.add_row("●" if i == chosen else "", row["method"], row["quant"], gb, fits, WHEN_TO_USE[row["method"]])
        table.move_cursor(row=chosen)
        self.proposal = chunking_proposal(self.state)
        self.query_one("#chunking").display = self.proposal is not None
        if self.proposal is not None:
            self.query_one("#chunk-proposal", Static).update(f"Long context: {self.proposal[2]}.")

    @on(Button.Pressed, "#apply-chunking")
    def _apply_chunking(self) -> None:
        """The proposal's ctx_len and chunk_ctx (data.chunk_ctx: infctx training)."""
        ctx_len, chunk, _ = self.proposal
        self.state.config.data.chunk_ctx = chunk
        self.state.config.data.ctx_len = ctx_len
        self.query_one("#ctx-len", Input).value = str(ctx_len)
        self.refresh_table()

    @on(Input.Changed)
    def _sizes_changed(self, event: Input.Changed) -> None:
        try:
            value = int(event.value)
        except ValueError:
            return
        if value < 1:
            return
        if event.input.id == "ctx-len":
            self.state.config.data.ctx_len = value
            chunk = self.state.config.data.chunk_ctx
            if chunk and (value <= chunk or value % chunk):  # chunks must divide ctx_len: off again
                self.state.config.data.chunk_ctx = 0
        elif event.input.id == "micro-bsz":
            self.state.config.data.micro_bsz = value
        self.refresh_table()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click) on a row chooses it; on the row already chosen, goes on."""
        if event.cursor_row == self.chosen_index():
            self.action_next()
            return
        self._choose(self.rows[event.cursor_row])
        self.refresh_table()

    def _choose(self, row: dict) -> None:
        from rwkv_tui.trainer.config import apply_overrides

        config = self.state.config
        if config.method.name != row["method"]:
            kept = (config.model.path, config.data.path, config.data.ctx_len, config.data.micro_bsz,
                    copy.deepcopy(config.hardware))
            config = apply_overrides(config, [f"method.name={row['method']}"])
            config.model.path, config.data.path, config.data.ctx_len, config.data.micro_bsz, config.hardware = kept
        config.method.quant = row["quant"]
        self.state.config = config
        note = "" if row["available"] else " — int8/nf4 need bitsandbytes: pip install 'rwkv-tui[gpu]'"
        self.query_one("#method-help", Static).update(f"[b]{row['method']}[/b] ({row['quant']}): "
                                                      f"{WHEN_TO_USE[row['method']]}{note}")

    def can_leave(self) -> bool:
        if self.state.config.method.quant not in available_quants():
            self.notify("int8/nf4 need the bitsandbytes package: pick a 'none' row or install it", severity="error")
            return False
        return True
