"""A run's events.jsonl as one CSV table (`rwkv-tui runs --csv RUN`), for a spreadsheet or pandas.

One row per event. The columns are `t`, `kind`, `step`, then every other field in the order it
first appears; a field an event lacks is empty, and a list or object field (a checkpoint's files)
is written as its JSON text.
"""

from __future__ import annotations

import csv
import json
from typing import IO, Any

from rwkv_tui.trainer.training.folder import RunFolder, read_all_events

_LEADING = ("t", "kind", "step")


def write_events_csv(folder: RunFolder, out: IO[str]) -> tuple[int, list[str]]:
    """Write the folder's events to `out` as CSV; returns how many rows, and the malformed lines
    that were skipped (for the caller to report)."""
    read = read_all_events(folder)
    skipped = [str(e.get("message")) for e in read if _is_reader_warning(e)]
    events = [e for e in read if not _is_reader_warning(e)]
    columns = list(_LEADING)
    for event in events:
        columns.extend(key for key in event if key not in columns)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for event in events:
        writer.writerow([_cell(event.get(column)) for column in columns])
    return len(events), skipped


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _is_reader_warning(event: dict) -> bool:
    """EventReader's own notes about unreadable lines carry no time: not events of the run."""
    return event.get("kind") == "warning" and "t" not in event
