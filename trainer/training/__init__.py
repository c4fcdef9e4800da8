"""Training runs: the loop (`loop.py`, imported lazily: it needs torch), the run folder it
writes, and listing runs."""

from rwkv_tui.trainer.training.folder import EventReader, EventWriter, RunFolder, read_all_events
from rwkv_tui.trainer.training.listing import RunSummary, list_runs, summarize_run

__all__ = ["EventReader", "EventWriter", "RunFolder", "RunSummary", "list_runs", "read_all_events",
           "summarize_run"]
