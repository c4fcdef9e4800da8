"""The one reader of training records: jsonl, json, parquet, csv/tsv, arrow or a `datasets`
folder, record by record, streaming.

Everything that reads training data reads it here: `rwkv-tui data check` (which reports
every problem), the in-memory corpus and `rwkv-tui data prepare` (which stop at the first
bad line) and the wizard's preview. So a line is usable in one place exactly when it is
usable in all, and a problem is worded the same everywhere (message, hint, column, excerpt).

Two steps, so that other files and record formats can plug in:

    read_records(path)            -> RecordLine per record: the object, or why there is none
    training_text(record, source) -> the text to train on, or why there is none: {"text": …}
                                     as is, other record formats converted by `formats`

`read_samples` does both. Files are told apart by suffix (a folder is a `datasets`
`save_to_disk` folder; an unknown suffix is read as jsonl, as always). jsonl, and json
holding jsonl, are numbered by line; the other kinds by row (1-based, a csv header not
counted), and their problems say "row N".

A `Span` reads only some whole lines of a jsonl (or whole row groups of a parquet), so that
processes can share a file (`line_spans`); the other kinds are read in one span (serially). Memory stays flat: a jsonl
line, a json array element or a batch of at most `TABLE_BATCH_ROWS` rows is held at a time.
No torch, no numpy (pyarrow only when a parquet/arrow file is read): the wizard imports this module.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.data import formats
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
TABLE_BATCH_ROWS = 1024  # rows of a parquet/arrow file turned into Python objects at once
JSON_READ_CHARS = 1 << 20  # characters of a .json array read at a time
INSTALL_HINT = "pip install 'rwkv-tui[data]'  (parquet, arrow and datasets folders need pyarrow)"
# How a records file is read (`file_kind`).
JSONL, JSON_ARRAY, PARQUET, CSV, TSV = "jsonl", "json-array", "parquet", "csv", "tsv"
ARROW, DATASETS = "arrow", "datasets"
_SUFFIX_KINDS = {".parquet": PARQUET, ".csv": CSV, ".tsv": TSV, ".arrow": ARROW}


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
    source: str = ""  # the decoded line without BOM and line ending, for excerpts ("" for a row)
    record: dict | None = None
    error: LineProblem | None = None
    warnings: tuple[LineProblem, ...] = ()  # usable, but probably not what was meant
    unit: str = "line"  # how `line` counts: "line" (jsonl) or "row" (every other kind)

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
    unit: str = "line"  # "line" or "row", as in RecordLine
    format: str | None = None  # the record's format (formats.MESSAGES, …); None without a record

    @property
    def blank(self) -> bool:
        return self.text is None and self.error is None

    @property
    def where(self) -> str:
        return f"{self.unit} {self.line}"


def excerpt(text: str, pos: int, width: int = 60) -> str:
    """About `width` characters of `text` around `pos`, line breaks shown as escapes."""
    lo = max(0, pos - width // 2)
    snippet = text[lo: lo + width].replace("\n", "\\n").replace("\r", "\\r")
    return ("…" if lo else "") + snippet + ("…" if lo + width < len(text) else "")


def file_kind(path: str | Path) -> str:
    """How a records file is read: by its suffix; a folder is a `datasets` folder; a .json
    starting with "[" is an array of records, any other .json is jsonl; anything else is jsonl."""
    path = Path(path)
    if path.is_dir():
        return DATASETS
    suffix = path.suffix.lower()
    if suffix == ".json":
        return JSON_ARRAY if _first_character(path) == "[" else JSONL
    return _SUFFIX_KINDS.get(suffix, JSONL)


def _first_character(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(4096).removeprefix(BOM)
    return head.lstrip()[:1].decode("ascii", "replace")


def input_size(path: str | Path) -> int:
    """Bytes to read: the file's size, or the sum of a folder's files (progress is in these bytes)."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return path.stat().st_size


def read_records(path: str | Path, span: Span = Span()) -> Iterator[RecordLine]:
    """Every record of `span` (all of the file by default), blank lines included, in order."""
    kind = file_kind(path)
    if kind == JSONL:
        return _read_jsonl(path, span)
    if kind == PARQUET:
        return _table_rows(_parquet_batches(Path(path), span), first_row=span.first_line)
    if span != Span():
        raise ValueError(f"{kind} files are read in one span, not {span}")  # line_spans gives one
    readers = {JSON_ARRAY: _read_json_array, CSV: _read_csv, TSV: _read_csv, ARROW: _read_arrow,
               DATASETS: _read_datasets_folder}
    return readers[kind](Path(path))


def _read_jsonl(path: str | Path, span: Span) -> Iterator[RecordLine]:
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


# ------------------------------------------------------------------ .json: an array of records

_WHITESPACE = re.compile(r"[ \t\n\r]*")


class _JsonArrayCursor:
    """A .json file's text, decoded a chunk at a time; consumed text is dropped, so memory
    holds about one chunk and the element being parsed (incremental, not json.load)."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.text, self.pos, self.eof = "", 0, False
        self.line_base = 1  # the file's line number of text[0], for error positions

    def read_more(self) -> bool:
        if self.eof:
            return False
        raw = self.handle.read(JSON_READ_CHARS)
        self.eof = not raw
        decoded = self.decoder.decode(raw, final=self.eof)
        if self.pos > JSON_READ_CHARS:
            self.line_base += self.text.count("\n", 0, self.pos)
            self.text, self.pos = self.text[self.pos:], 0
        self.text += decoded
        return True

    def next_character(self) -> str:
        """The next non-whitespace character (not consumed); "" at the end of the file."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.read_more():
                return ""

    def value(self) -> tuple[object, str]:
        """The next JSON value and its source text; reads on while it is cut off."""
        self.next_character()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                if self.read_more():
                    continue
                raise
            if end == len(self.text) and self.read_more():  # a number may go on in the next chunk
                continue
            source, self.pos = self.text[self.pos:end], end
            return obj, source

    def where(self, pos: int) -> str:
        line = self.line_base + self.text.count("\n", 0, pos)
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return f"line {line}, column {column} of the file"


def _read_json_array(path: Path) -> Iterator[RecordLine]:
    """Every element of the file's top-level array, as row 1, 2, …. A syntax error ends the
    reading: after it, where the next element starts cannot be known."""
    with open(path, "rb") as handle:
        cursor = _JsonArrayCursor(handle)
        row = 0
        try:
            cursor.next_character()
            cursor.pos += 1  # the "[" that file_kind saw
            if cursor.next_character() == "]":
                cursor.pos += 1
                yield from _json_array_tail(cursor, row, handle)
                return
            while True:
                row += 1
                yield _json_array_row(cursor, row, handle)
                separator = cursor.next_character()
                if separator == "]":
                    cursor.pos += 1
                    yield from _json_array_tail(cursor, row, handle)
                    return
                if separator != ",":
                    yield _json_syntax_row(cursor, row + 1, "expected ',' or ']' after the element")
                    return
                cursor.pos += 1
        except json.JSONDecodeError as exc:
            yield _json_syntax_row(cursor, row, f"invalid JSON: {exc.msg}", exc.pos)
        except UnicodeDecodeError as exc:
            yield RecordLine(row, handle.tell(), error=LineProblem(
                "utf8", f"invalid UTF-8 near byte {handle.tell()} of the file",
                "re-save the file as UTF-8 (it may be GBK/Latin-1)",
                excerpt=repr(exc.object[exc.start: exc.start + 20])),
                unit="row")


def _json_array_row(cursor: _JsonArrayCursor, row: int, handle) -> RecordLine:
    obj, source = cursor.value()
    if not isinstance(obj, dict):
        return RecordLine(row, handle.tell(), source, error=LineProblem(
            "not-object", f"the element is a JSON {type(obj).__name__}, not an object",
            'make every element of the array an object such as {"text": "..."}', excerpt=excerpt(source, 0)),
            unit="row")
    return RecordLine(row, handle.tell(), source, obj, unit="row")


def _json_array_tail(cursor: _JsonArrayCursor, row: int, handle) -> Iterator[RecordLine]:
    """Nothing may follow the array's "]" but whitespace."""
    if cursor.next_character():
        yield _json_syntax_row(cursor, row + 1, "extra characters after the array's closing ]")


def _json_syntax_row(cursor: _JsonArrayCursor, row: int, message: str, pos: int | None = None) -> RecordLine:
    pos = cursor.pos if pos is None else pos
    hint = _json_hint(message) if message.startswith("invalid JSON") else ""
    return RecordLine(row, cursor.handle.tell(), error=LineProblem(
        "json", f"{message} ({cursor.where(pos)})",
        hint.replace("each line must be", "each element must be") or "write the file as one JSON array of objects",
        excerpt=excerpt(cursor.text, pos)), unit="row")


# ------------------------------------------------------------------ .csv / .tsv with a header row


def _read_csv(path: Path) -> Iterator[RecordLine]:
    """Every data row under the header, as row 1, 2, …; blank rows are skipped. Values are strings."""
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB a field) is shorter than a long document
    position = [0]

    def lines() -> Iterator[str]:
        with open(path, "rb") as handle:
            for raw in handle:
                position[0] += len(raw)
                yield (raw.removeprefix(BOM) if position[0] == len(raw) else raw).decode("utf-8")

    reader = csv.reader(lines(), delimiter="\t" if file_kind(path) == TSV else ",", strict=True)
    row = 0
    try:
        header = next(reader, None)
        for values in reader:
            if not any(value.strip() for value in values):
                continue
            row += 1
            yield _csv_row(header, values, row, position[0])
    except (csv.Error, UnicodeDecodeError) as exc:
        yield RecordLine(row + 1, position[0], error=LineProblem(
            "csv", f"cannot read the row (line {reader.line_num} of the file): {exc}",
            "quote fields that contain the delimiter, quotes or line breaks, and save as UTF-8"), unit="row")


def _csv_row(header: list[str], values: list[str], row: int, end: int) -> RecordLine:
    if len(values) > len(header):
        return RecordLine(row, end, error=LineProblem(
            "csv", f"the row has {len(values)} fields, the header {len(header)}",
            "quote fields that contain the delimiter"), unit="row")
    return RecordLine(row, end, record=dict(zip(header, values)), unit="row")


# ------------------------------------------------------------------ parquet, arrow, datasets folders


def _pyarrow(path: Path):
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet  # noqa: F401  (imported for pyarrow.parquet below)
    except ImportError:
        raise DataError("reading this file needs pyarrow, which is not installed", path=path,
                        hint=INSTALL_HINT) from None
    return pyarrow


def _open_parquet(path: Path):
    pa = _pyarrow(path)
    try:
        return pa.parquet.ParquetFile(path)
    except pa.ArrowException as exc:
        raise DataError(f"not a readable parquet file: {exc}", path=path,
                        hint="write it again, e.g. with pandas' to_parquet or pyarrow.parquet.write_table") from None


def _parquet_batches(path: Path, span: Span) -> Iterator[tuple[object, int]]:
    """(batch, about the bytes read after it) of the row groups [span.start, span.end): a row
    group is decoded at a time, never the file."""
    parquet = _open_parquet(path)
    total_rows, size = max(1, parquet.metadata.num_rows), path.stat().st_size
    rows = span.first_line - 1
    end = parquet.num_row_groups if span.end is None else span.end
    for group in range(span.start, end):  # iter_batches over all groups would buffer the whole file
        for batch in parquet.iter_batches(batch_size=TABLE_BATCH_ROWS, row_groups=[group], use_threads=False):
            rows += batch.num_rows
            yield batch, size * rows // total_rows


def _read_arrow(path: Path) -> Iterator[RecordLine]:
    yield from _table_rows(_arrow_batches(path, 0))


def _arrow_batches(path: Path, offset: int) -> Iterator[tuple[object, int]]:
    """(batch, bytes read after it) of an Arrow IPC file, or of a stream (as `datasets` writes
    them): memory-mapped, so a batch's data is read when used."""
    pa = _pyarrow(path)
    source = pa.memory_map(str(path))
    size = source.size()
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            stream = pa.ipc.open_stream(source)
        except pa.ArrowInvalid as exc:
            raise DataError(f"not an Arrow IPC file or stream: {exc}", path=path,
                            hint="write it with pyarrow.ipc or datasets' save_to_disk") from None
        for batch in stream:
            yield batch, offset + source.tell()
        return
    count = reader.num_record_batches
    for i in range(count):
        yield reader.get_batch(i), offset + size * (i + 1) // count


def _read_datasets_folder(path: Path) -> Iterator[RecordLine]:
    """The rows of a `datasets.Dataset.save_to_disk` folder: its .arrow shards in order, read
    with pyarrow directly (no `datasets` needed), rows numbered across shards."""
    if (path / "dataset_dict.json").exists():
        splits = ", ".join(sorted(p.name for p in path.iterdir() if p.is_dir())) or "none"
        raise DataError(f"a DatasetDict folder (splits: {splits}), not one dataset", path=path,
                        hint=f"give one split's folder, e.g. {path / 'train'}")
    shards = sorted(path.glob("*.arrow"))
    if not shards:
        raise DataError("the folder has no .arrow files: not a folder saved by datasets' save_to_disk", path=path,
                        hint="give a data file (.jsonl, .json, .parquet, .csv, .tsv, .arrow) or a save_to_disk folder")
    row, offset = 0, 0
    for shard in shards:
        for record in _table_rows(_arrow_batches(shard, offset), first_row=row + 1):
            row = record.line
            yield record
        offset += shard.stat().st_size


def _table_rows(batches: Iterable[tuple[object, int]], first_row: int = 1) -> Iterator[RecordLine]:
    """The rows of (record batch, bytes read after it) as dicts, `TABLE_BATCH_ROWS` at a time;
    a null cell is an absent field (columns are shared by every row, a record's missing field is null)."""
    row = first_row - 1
    for batch, end in batches:
        for start in range(0, batch.num_rows, TABLE_BATCH_ROWS):
            rows = batch.slice(start, TABLE_BATCH_ROWS).to_pylist()
            for values in rows:
                row += 1
                yield RecordLine(row, end, record={k: v for k, v in values.items() if v is not None}, unit="row")


@dataclass(slots=True)
class RecordText:
    """A record as training sees it: its text or the problem, its format, conversion warnings."""

    text: str | LineProblem
    format: str | None
    warnings: tuple[LineProblem, ...] = ()


def training_text(record: dict, source: str) -> str | LineProblem:
    """The text a record trains on, or what is wrong with it (`source`, the record's line,
    gives the excerpt; for a row, the record itself does)."""
    return record_text(record, source).text


def record_text(record: dict, source: str) -> RecordText:
    """`training_text` with the record's format and the warnings its conversion found."""
    if "text" in record:  # first: the common case stays one lookup
        return RecordText(_plain_text(record, source), formats.TEXT)
    fmt = formats.record_format(record)
    if fmt is None:
        keys = ", ".join(list(record)[:4])
        return RecordText(LineProblem("no-text", f'no "text" field, nor another record format\'s fields '
                                                 f'(fields: {keys or "none"})',
                                      formats.SUPPORTED_HINT + '; or join your fields into one "text" string',
                                      excerpt=excerpt(source or _shown(record), 0)), None)
    converted = formats.convert(record, fmt)
    if isinstance(converted, formats.FormatProblem):
        return RecordText(LineProblem(converted.kind, converted.message, converted.hint,
                                      excerpt=excerpt(source or _shown(record), 0)), fmt)
    warnings = tuple(LineProblem(w.kind, w.message, w.hint) for w in converted.warnings)
    if _SURROGATE.search(converted.text):
        return RecordText(_SURROGATE_PROBLEM, fmt, warnings)
    return RecordText(converted.text, fmt, warnings)


def _shown(record: dict) -> str:
    """A row's record written out for an excerpt (a row has no source line)."""
    return json.dumps(record, ensure_ascii=False, default=str)


def _plain_text(record: dict, source: str) -> str | LineProblem:
    """A {"text": …} record's text, taken as is, or what is wrong with it."""
    text = record["text"]
    if not isinstance(text, str):
        return LineProblem("text-type", f'"text" is a {type(text).__name__}, not a string',
                           'make "text" one string; join conversation turns with \\n\\n', excerpt=excerpt(source, 0))
    if not text.strip():
        return LineProblem("empty-text", '"text" is empty', "remove the line or fill it in")
    if _SURROGATE.search(text):
        return _SURROGATE_PROBLEM
    return text


_SURROGATE_PROBLEM = LineProblem("surrogate", "the text contains a lone surrogate escape (\\ud8xx)",
                                 "fix the escaping where the file was produced")


def read_samples(path: str | Path, span: Span = Span()) -> Iterator[Sample]:
    """`read_records` then `record_text`: every record of `span` with its text or its error."""
    for line in read_records(path, span):
        if line.record is None:
            yield Sample(line.line, line.end, error=line.error, warnings=line.warnings, unit=line.unit)
            continue
        if "text" in line.record:  # the common case, without building a RecordText
            text, fmt, warnings = _plain_text(line.record, line.source), formats.TEXT, line.warnings
        elif (quick := formats.quick_convert(line.record)) is not None and not _SURROGATE.search(quick[1]):
            yield Sample(line.line, line.end, quick[1], warnings=line.warnings, unit=line.unit, format=quick[0])
            continue  # a well-formed conversation or Alpaca record: no RecordText, no problem objects
        else:
            converted = record_text(line.record, line.source)
            text, fmt, warnings = converted.text, converted.format, line.warnings + converted.warnings
        if isinstance(text, LineProblem):
            yield Sample(line.line, line.end, error=text, warnings=warnings, unit=line.unit, format=fmt)
        else:
            yield Sample(line.line, line.end, text, warnings=warnings, unit=line.unit, format=fmt)


def training_texts(path: str | Path, span: Span = Span()) -> Iterator[str]:
    """The text of every sample of `span`, in order. Training cannot skip a line the user
    meant to train on, so the first bad line raises a DataError naming it."""
    for sample in read_samples(path, span):
        if sample.error is not None:
            raise bad_line_error(path, sample.line, sample.error, sample.unit)
        if sample.text is not None:
            yield sample.text


def bad_line_error(path: str | Path, line: int, problem: LineProblem, unit: str = "line") -> DataError:
    """The DataError training raises for a bad record: "PATH:LINE: …" for a jsonl line (as
    ever), "PATH: row N: …" for a row."""
    column = f" (column {problem.column})" if problem.column else ""
    hint = f"{problem.hint}; `rwkv-tui data check {path}` lists every problem"
    if unit == "line":
        return DataError(problem.message + column, path=path, line=line, hint=hint)
    return DataError(f"{unit} {line}: {problem.message}{column}", path=path, hint=hint)


def first_text(path: str | Path) -> str | None:
    """The first sample's text, for a preview: None when there is none, or the file cannot
    be read (any more)."""
    try:
        return next((sample.text for sample in read_samples(path) if sample.text is not None), None)
    except (OSError, DataError):
        return None


def detected_format(path: str | Path) -> str | None:
    """`detect_format` for a summary line: None where the file cannot be read (the check that
    runs beside it reports why)."""
    try:
        return detect_format(path)
    except (OSError, ValueError):
        return None


def detect_format(path: str | Path, max_records: int = 1000) -> str:
    """The record format of a file, from its first `max_records` records: one name such as
    "OpenAI messages" (formats.MESSAGES), "mixed: OpenAI messages, Alpaca", or "none" when no
    record shows a format."""
    seen: dict[str, None] = {}
    records = (r.record for r in read_records(path) if r.record is not None)
    for _, record in zip(range(max_records), records):
        fmt = formats.record_format(record)
        if fmt is not None:
            seen[fmt] = None
    return format_summary(list(seen))


def format_summary(names: list[str]) -> str:
    """What `detect_format` says of a file whose records showed `names`, in order of first use."""
    if not names:
        return "none"
    return names[0] if len(names) == 1 else "mixed: " + ", ".join(names)


def line_spans(path: str | Path, lines_per_span: int) -> list[Span]:
    """Consecutive spans of `lines_per_span` lines covering the file, found by one streaming
    pass: workers then read their own span, the caller never holds the data. A parquet's spans
    are whole row groups; the other kinds are one span: they are read serially."""
    kind = file_kind(path)
    if kind == PARQUET:
        return _row_group_spans(Path(path), lines_per_span)
    if kind != JSONL:
        return [Span()]
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


def _row_group_spans(path: Path, rows_per_span: int) -> list[Span]:
    """A parquet's spans: whole row groups (start/end are row group indexes), `rows_per_span` or more rows each."""
    metadata = _open_parquet(path).metadata
    spans, start, first, rows = [], 0, 1, 0
    for group in range(metadata.num_row_groups):
        rows += metadata.row_group(group).num_rows
        if rows - first + 1 >= rows_per_span:
            spans.append(Span(start, group + 1, first))
            start, first = group + 1, rows + 1
    if start < metadata.num_row_groups or not spans:
        spans.append(Span(start, metadata.num_row_groups, first))
    return spans
