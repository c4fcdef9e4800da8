"""The one reader of training records: a jsonl file, line by line, streaming.

Everything that reads training data reads it here: `rwkv-tui data check` (which reports
every problem), the in-memory corpus and `rwkv-tui data prepare` (which stop at the first
bad line) and the wizard's preview. So a line is usable in one place exactly when it is
usable in all, and a problem is worded the same everywhere (message, hint, column, excerpt).

Two steps, so that other files and record formats can plug in:

    read_records(path)            -> RecordLine per line: the JSON object, or why there is none
    training_text(record, source) -> the text to train on ({"text": …}), or why there is none

`read_samples` does both. A `Span` reads only some whole lines, so that processes can share
a file (`line_spans`). Memory stays flat: one line is held at a time. No torch, no numpy:
the wizard imports this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.errors import DataError

BOM = b"\xef\xbb\xbf"
_DECODER = json.JSONDecoder()  # stateless: one for every line (json.loads shares one the same way)
_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads leaves a lone "\ud8xx" escape in the str
_JSON_HINTS = (  # the first fragment of the decoder's message that matches says what to fix
    ("Unterminated string", 'a closing quote is missing: every string must end with "'),
    ("Invalid control character", "a raw line break or tab is inside the string: write \\n or \\t instead"),
    ("Expecting ',' delimiter", 'a quote inside the text ends the string early: write \\" for a quote inside text'),
    ("Expecting ':' delimiter", 'a quote inside the text ends the string early: write \\" for a quote inside text'),
    ("Invalid \\escape", "a backslash starts an unknown escape: write \\\\ for a backslash"),
)
_ONE_OBJECT_HINT = 'each line must be one JSON object such as {"text": "..."}'


@dataclass(frozen=True)
class LineProblem:
    """Why a line cannot be trained on (an error), or may not be what was meant (a warning)."""

    kind: str
    message: str
    hint: str = ""
    column: int | None = None  # 1-based, in characters of the decoded line
    excerpt: str = ""


_BOM_WARNING = LineProblem("bom", "the file starts with a UTF-8 byte-order mark (BOM)",
                           "save the file as UTF-8 without BOM; rwkv-tui skips it, other tools may not")
_CRLF_WARNING = LineProblem("crlf", "Windows line ending (\\r\\n)",
                            "save with Unix line endings (\\n); the \\r is ignored")


@dataclass(frozen=True)
class Span:
    """Whole lines of a file: the bytes [start, end) (end None: to the end of the file),
    the first of them being line `first_line`."""

    start: int = 0
    end: int | None = None
    first_line: int = 1


@dataclass(slots=True)  # not frozen: built for every line, and frozen __init__ costs 5x
class RecordLine:
    """One line of a records file as read: its record, or the error that stops it being one."""

    line: int  # 1-based
    end: int  # byte offset just past the line: progress, and where the next line starts
    source: str = ""  # the decoded line without BOM and line ending, for excerpts
    record: dict | None = None
    error: LineProblem | None = None
    warnings: tuple[LineProblem, ...] = ()  # usable, but probably not what was meant

    @property
    def blank(self) -> bool:
        return self.record is None and self.error is None


@dataclass(slots=True)  # not frozen: built for every line, and frozen __init__ costs 5x
class Sample:
    """One line as training sees it: the text to train on, or the error that stops it."""

    line: int
    end: int
    text: str | None = None
    error: LineProblem | None = None
    warnings: tuple[LineProblem, ...] = ()

    @property
    def blank(self) -> bool:
        return self.text is None and self.error is None


def excerpt(text: str, pos: int, width: int = 60) -> str:
    """About `width` characters of `text` around `pos`, line breaks shown as escapes."""
    lo = max(0, pos - width // 2)
    snippet = text[lo: lo + width].replace("\n", "\\n").replace("\r", "\\r")
    return ("…" if lo else "") + snippet + ("…" if lo + width < len(text) else "")


def read_records(path: str | Path, span: Span = Span()) -> Iterator[RecordLine]:
    """Every line of `span` (all of the file by default), blank lines included, in order."""
    with open(path, "rb") as handle:
        handle.seek(span.start)
        position = span.start
        for number, raw in enumerate(handle, start=span.first_line):
            if span.end is not None and position >= span.end:
                return
            position += len(raw)
            yield _read_line(raw, number, position)


def _read_line(raw: bytes, number: int, end: int) -> RecordLine:
    warnings: tuple[LineProblem, ...] = ()
    if number == 1 and raw.startswith(BOM):
        warnings, raw = (_BOM_WARNING,), raw[len(BOM):]
    if raw.endswith(b"\r\n"):
        warnings += (_CRLF_WARNING,)
    body = raw.rstrip(b"\r\n")
    if not body.strip():
        return RecordLine(number, end, warnings=warnings)
    try:
        source = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RecordLine(number, end, error=_utf8_problem(body, exc), warnings=warnings)
    parsed = parse_object(source)
    if isinstance(parsed, LineProblem):
        return RecordLine(number, end, source, error=parsed, warnings=warnings)
    return RecordLine(number, end, source, parsed, warnings=warnings)


def _utf8_problem(body: bytes, exc: UnicodeDecodeError) -> LineProblem:
    return LineProblem("utf8", f"invalid UTF-8 at byte {exc.start} of the line",
                       "re-save the file as UTF-8 (it may be GBK/Latin-1)",
                       excerpt=repr(body[max(0, exc.start - 20): exc.start + 20]))


def parse_object(source: str) -> dict | LineProblem:
    """The one JSON object on a line (surrounding whitespace allowed), or what is wrong."""
    stripped = source.lstrip()
    offset = len(source) - len(stripped)
    try:
        obj, end = _DECODER.raw_decode(stripped)
    except json.JSONDecodeError as exc:
        return LineProblem("json", f"invalid JSON: {exc.msg}", _json_hint(exc.msg), column=exc.pos + offset + 1,
                           excerpt=excerpt(source, exc.pos + offset))
    if stripped[end:].strip():
        return LineProblem("trailing", "extra characters after the JSON object",
                           "keep exactly one JSON object per line", column=offset + end + 1,
                           excerpt=excerpt(source, offset + end))
    if not isinstance(obj, dict):
        return LineProblem("not-object", f"the line is a JSON {type(obj).__name__}, not an object",
                           'write {"text": "..."}', excerpt=excerpt(source, 0))
    return obj


def _json_hint(message: str) -> str:
    return next((hint for fragment, hint in _JSON_HINTS if fragment in message), _ONE_OBJECT_HINT)


def training_text(record: dict, source: str) -> str | LineProblem:
    """The text a {"text": …} record trains on, or what is wrong with it (`source`, the
    record's line, gives the excerpt)."""
    if "text" not in record:
        keys = ", ".join(list(record)[:4])
        return LineProblem("no-text", f'no "text" field (fields: {keys or "none"})',
                           'rename the field to "text", or join your fields into one "text" string',
                           excerpt=excerpt(source, 0))
    text = record["text"]
    if not isinstance(text, str):
        return LineProblem("text-type", f'"text" is a {type(text).__name__}, not a string',
                           'make "text" one string; join conversation turns with \\n\\n', excerpt=excerpt(source, 0))
    if not text.strip():
        return LineProblem("empty-text", '"text" is empty', "remove the line or fill it in")
    if _SURROGATE.search(text):
        return LineProblem("surrogate", "the text contains a lone surrogate escape (\\ud8xx)",
                           "fix the escaping where the file was produced")
    return text


def read_samples(path: str | Path, span: Span = Span()) -> Iterator[Sample]:
    """`read_records` then `training_text`: every line of `span` with its text or its error."""
    for line in read_records(path, span):
        if line.record is None:
            yield Sample(line.line, line.end, error=line.error, warnings=line.warnings)
            continue
        text = training_text(line.record, line.source)
        if isinstance(text, LineProblem):
            yield Sample(line.line, line.end, error=text, warnings=line.warnings)
        else:
            yield Sample(line.line, line.end, text, warnings=line.warnings)


def training_texts(path: str | Path, span: Span = Span()) -> Iterator[str]:
    """The text of every sample of `span`, in order. Training cannot skip a line the user
    meant to train on, so the first bad line raises a DataError naming it."""
    for sample in read_samples(path, span):
        if sample.error is not None:
            raise bad_line_error(path, sample.line, sample.error)
        if sample.text is not None:
            yield sample.text


def bad_line_error(path: str | Path, line: int, problem: LineProblem) -> DataError:
    column = f" (column {problem.column})" if problem.column else ""
    return DataError(problem.message + column, path=path, line=line,
                     hint=f"{problem.hint}; `rwkv-tui data check {path}` lists every problem")


def first_text(path: str | Path) -> str | None:
    """The first sample's text, for a preview: None when there is none, or the file cannot
    be read (any more)."""
    try:
        return next((sample.text for sample in read_samples(path) if sample.text is not None), None)
    except OSError:
        return None


def line_spans(path: str | Path, lines_per_span: int) -> list[Span]:
    """Consecutive spans of `lines_per_span` lines covering the file, found by one streaming
    pass: workers then read their own span, the caller never holds the data."""
    spans, start, first, position = [], 0, 1, 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            position += len(raw)
            if number - first + 1 >= lines_per_span:
                spans.append(Span(start, position, first))
                start, first = position, number + 1
    if position > start:
        spans.append(Span(start, position, first))
    return spans
