"""The one record reader: lines, blanks, BOM, spans, problems, flat memory, and the rule
that nothing else in the package parses training records."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from rwkv_tui.trainer.data.check import check_jsonl
from rwkv_tui.trainer.data.corpus import load_jsonl_corpus
from rwkv_tui.trainer.data.prepare import prepare_binidx
from rwkv_tui.trainer.data.records import (
    Span, first_text, line_spans, read_records, read_samples, training_texts,
)
from rwkv_tui.trainer.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = ("rwkv_tui", "trainer", "kernels", "presets")
READER = "trainer/data/records.py"
# JSON that is not a training record, each read where it belongs.
NOT_TRAINING_RECORDS = {
    "trainer/training/folder.py": "a run's status.json and events.jsonl",
    "trainer/adapters.py": "an adapter's metadata, stored in the file as JSON bytes",
    "rwkv_tui/recent.py": "the recently used models list",
    "trainer/config.py": "a --set value given as a JSON list",
    "trainer/training/listing.py": "the few summary events of a run, parsed without reading every step line",
    "trainer/training/run_index.py": "the index of run folders",
}
JSON_MODULES = {"json", "orjson", "ujson", "simplejson"}
JSON_PARSERS = {"load", "loads", "JSONDecoder", "raw_decode"}


def json_parsing_lines(source: str) -> list[int]:
    """Lines that parse JSON: `json.loads(…)`, `json.JSONDecoder`, `from json import loads`,
    also through `import json as alias`."""
    tree = ast.parse(source)
    aliases = set(JSON_MODULES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name in JSON_MODULES and a.asname}
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in JSON_PARSERS
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            found.append(node.lineno)
        elif (isinstance(node, ast.ImportFrom) and node.module in JSON_MODULES
              and any(a.name in JSON_PARSERS for a in node.names)):
            found.append(node.lineno)
    return sorted(found)


def package_sources():
    """Every .py of the package, once: os.walk does not follow rwkv_tui/trainer and the other
    symlinks to the folders it visits anyway."""
    for folder in PACKAGE_FOLDERS:
        for directory, _, files in os.walk(ROOT / folder):
            for name in files:
                if name.endswith(".py"):
                    yield Path(directory, name).relative_to(ROOT).as_posix()


def test_the_package_has_one_jsonl_reader():
    parsing = {path: lines for path in package_sources()
               if (lines := json_parsing_lines((ROOT / path).read_text(encoding="utf-8")))}
    assert READER in parsing  # the scan sees the reader's own parsing
    offenders = [f"{path}:{lines}" for path, lines in parsing.items()
                 if path != READER and path not in NOT_TRAINING_RECORDS]
    assert not offenders, ("read training records with rwkv_tui.trainer.data.records, not json itself "
                           "(or add a file reading other JSON to NOT_TRAINING_RECORDS):\n" + "\n".join(offenders))
    stale = sorted(set(NOT_TRAINING_RECORDS) - set(parsing))
    assert not stale, f"no longer parse JSON, drop them from NOT_TRAINING_RECORDS: {stale}"


def test_the_scan_recognises_every_way_to_parse_json():
    assert json_parsing_lines("import json\nx = json.loads(s)\n") == [2]
    assert json_parsing_lines("import json as j\n\ny = j.load(f)\n") == [3]
    assert json_parsing_lines("from json import loads\n") == [1]
    assert json_parsing_lines("import json\nd = json.JSONDecoder()\n") == [2]
    assert json_parsing_lines("import orjson\norjson.loads(b)\n") == [2]
    assert json_parsing_lines("import json\nprint(json.dumps({}))\nloads = 1\n") == []


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def test_lines_blanks_bom_and_crlf(tmp_path):
    lines = [b'\xef\xbb\xbf{"text": "one"}\r\n', b"  \t\n", b"\n", b'{"text": "two", "id": 2}\n', b'{"text": "three"}']
    path = write_lines(tmp_path / "d.jsonl", lines)
    read = list(read_records(path))
    assert [r.line for r in read] == [1, 2, 3, 4, 5]
    assert [r.end for r in read] == [sum(map(len, lines[:i + 1])) for i in range(5)]
    assert [r.blank for r in read] == [False, True, True, False, False]
    assert [w.kind for w in read[0].warnings] == ["bom", "crlf"] and not read[3].warnings
    assert read[0].source == '{"text": "one"}' and read[3].record == {"text": "two", "id": 2}
    assert list(training_texts(path)) == ["one", "two", "three"]


def test_a_bom_after_line_one_is_an_error(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [b'{"text": "a"}\n', b'\xef\xbb\xbf{"text": "b"}\n'])
    second = list(read_samples(path))[1]
    assert second.error.kind == "json" and second.error.column == 1 and not second.warnings


@pytest.mark.parametrize("line, kind, column", [
    (b'{"text": "open}', "json", 10),
    (b'{"text": "a"} x', "trailing", 14),  # just after the object
    (b"[1, 2]", "not-object", None),
    (b'{"txt": "a"}', "no-text", None),
    (b'{"text": ["a"]}', "text-type", None),
    (b'{"text": " \\n "}', "empty-text", None),
    (b'{"text": "a\\ud800"}', "surrogate", None),
    (b'{"text": "caf\xe9"}', "utf8", None),
])
def test_every_problem_is_named_on_its_line(tmp_path, line, kind, column):
    path = write_lines(tmp_path / "d.jsonl", [b'{"text": "fine"}\n', b"\n", line + b"\n"])
    samples = list(read_samples(path))
    assert samples[0].text == "fine" and samples[1].blank
    bad = samples[2]
    assert (bad.line, bad.text, bad.error.kind, bad.error.column) == (3, None, kind, column)
    with pytest.raises(DataError) as exc:
        list(training_texts(path))
    assert exc.value.line == 3 and exc.value.message.startswith(bad.error.message)


@pytest.mark.parametrize("line", [b'{"text": "   "}', b'{"text": "x\\udc00"}', b'{"text": "a"} {"b": 1}'])
def test_training_refuses_the_lines_check_calls_errors(tmp_path, line):
    """Once the corpus and prepare each had a laxer parser: they trained on lines the check
    rejected. Now all three read through the same reader."""
    path = write_lines(tmp_path / "d.jsonl", [b'{"text": "User: hi\\n\\nAssistant: yo"}\n', line + b"\n"])
    assert [(i.severity, i.line) for i in check_jsonl(path).errors] == [("error", 2)]
    for train in (lambda: load_jsonl_corpus(path), lambda: prepare_binidx(path, tmp_path / "out", workers=1)):
        with pytest.raises(DataError) as exc:
            train()
        assert exc.value.line == 2 and "data check" in exc.value.hint


def test_spans_cover_the_file_and_read_the_same_lines(tmp_path):
    lines = [json.dumps({"text": f"sample {i}"}).encode() + b"\n" if i % 5 else b"\n" for i in range(23)]
    lines[7] = b"{broken\n"
    path = write_lines(tmp_path / "d.jsonl", [b"\xef\xbb\xbf" + lines[0]] + lines[1:])
    spans = line_spans(path, lines_per_span=4)
    assert [s.first_line for s in spans] == [1, 5, 9, 13, 17, 21]
    assert spans[0].start == 0 and spans[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))

    def seen(samples):
        return [(s.line, s.end, s.text, s.error and s.error.kind, [w.kind for w in s.warnings]) for s in samples]

    assert [x for span in spans for x in seen(read_samples(path, span))] == seen(read_samples(path))
    assert seen(read_samples(path, Span(spans[1].start, None, 5)))[-1][0] == 23  # no end: to the end of the file


def test_first_text_skips_bad_lines(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [b"\n", b'{"text": ""}\n', b"oops\n", b'{"text": "this one"}\n'])
    assert first_text(path) == "this one"
    assert first_text(write_lines(tmp_path / "none.jsonl", [b"\n"])) is None
    assert first_text(tmp_path / "missing.jsonl") is None


def test_memory_stays_flat_on_a_big_file(tmp_path):
    """The reader holds one line at a time: reading 32 MB allocates well under 1 MB at peak."""
    line = (json.dumps({"text": "User: " + "word " * 200 + "\n\nAssistant: ok"}) + "\n").encode()
    path = tmp_path / "big.jsonl"
    with path.open("wb") as out:
        for _ in range(32):
            out.write(line * (2**20 // len(line) + 1))
    tracemalloc.start()
    try:
        count = sum(1 for sample in read_samples(path) if sample.text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count >= 32 * 2**20 // len(line) and peak < 2**20


def test_the_reader_imports_neither_torch_nor_numpy():
    code = ("import sys, rwkv_tui.trainer.data.records\n"
            "print(','.join(m for m in ('torch', 'numpy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
