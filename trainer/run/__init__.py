"""Training runs: the loop, the run folder it writes, and listing runs."""

from trainer.run.folder import EventReader, EventWriter, RunFolder, read_all_events
from trainer.run.listing import RunSummary, list_runs, summarize_run

__all__ = ["EventReader", "EventWriter", "RunFolder", "RunSummary", "list_runs", "read_all_events",
           "summarize_run", "run"]


def run(*args, **kwargs):
    """`trainer.run.loop.run`, imported lazily (it pulls in torch and Lightning)."""
    from trainer.run.loop import run as _run

    return _run(*args, **kwargs)
