"""Data as users hold it: every reader (jsonl, json, parquet, csv/tsv, arrow, a `datasets`
folder), every record format converted byte for byte, every cleaning rule and every error
naming the file, the record and the field."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from rwkv_tui.trainer.data import formats
from rwkv_tui.trainer.data.check import check_jsonl
from rwkv_tui.trainer.data.corpus import load_jsonl_corpus
from rwkv_tui.trainer.data.records import (
    INSTALL_HINT, detect_format, file_kind, first_text, line_spans, read_samples, training_texts,
)
from rwkv_tui.trainer.errors import DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

# Each record and the World text it must become, byte for byte.
CASES = [
    ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello."}]},
     "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello."),
    ({"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"},
                        {"from": "user", "value": "And 3+3?"}, {"from": "assistant", "value": "6"}]},
     "User: 2+2?\n\nAssistant: 4\n\nUser: And 3+3?\n\nAssistant: 6"),
    ({"conversations": [{"from": "system", "value": "Terse."}, {"from": "human", "value": "a"},
                        {"from": "gpt", "value": "b"}]},
     "System: Terse.\n\nUser: a\n\nAssistant: b"),
    ({"instruction": "Translate.", "input": "chat", "output": "cat"},
     "Instruction: Translate.\n\nInput: chat\n\nResponse: cat"),
    ({"instruction": "Name a colour.", "input": "", "output": "Red"}, "Instruction: Name a colour.\n\nResponse: Red"),
    ({"instruction": "Name a colour.", "output": "Blue"}, "Instruction: Name a colour.\n\nResponse: Blue"),
    ({"prompt": "Say hi", "completion": "hi"}, "User: Say hi\n\nAssistant: hi"),
    ({"prompt": "Say yo", "response": "yo"}, "User: Say yo\n\nAssistant: yo"),
    ({"question": "Why?", "answer": "Because."}, "User: Why?\n\nAssistant: Because."),
    ({"text": "  kept\r\n\n\nas is  "}, "  kept\r\n\n\nas is  "),  # {"text"}: untouched
]
FORMAT_NAMES = [formats.MESSAGES, formats.SHAREGPT, formats.SHAREGPT, formats.ALPACA, formats.ALPACA, formats.ALPACA,
                formats.PROMPT_COMPLETION, formats.PROMPT_RESPONSE, formats.QUESTION_ANSWER, formats.TEXT]
CHAT = [({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]},
         f"User: q{i}\n\nAssistant: a{i}") for i in range(5)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_parquet(path: Path, records: list[dict], row_group_size: int = 2) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path


def texts(path) -> list[str]:
    return list(training_texts(path))


# ------------------------------------------------------------------ formats, byte for byte


@pytest.mark.parametrize("record, expected", CASES)
def test_every_format_converts_byte_for_byte(tmp_path, record, expected):
    assert texts(write_jsonl(tmp_path / "d.jsonl", [record])) == [expected]


def test_every_format_is_detected_by_name(tmp_path):
    for (record, _), name in zip(CASES, FORMAT_NAMES):
        assert detect_format(write_jsonl(tmp_path / "d.jsonl", [record] * 2)) == name
    assert [s.format for s in read_samples(write_jsonl(tmp_path / "all.jsonl", [r for r, _ in CASES]))] == FORMAT_NAMES


def test_the_turn_cleaning_rules():
    assert formats.clean("  a\r\nb\r\n\r\n\r\nc\n\n\nd  \n") == "a\nb\nc\nd"
    assert formats.clean("x\n\ny") == "x\ny" and formats.clean("\n\t x \t\n") == "x"
    assert formats.clean("lone\rcarriage") == "lone\rcarriage"  # only CRLF pairs become LF


def test_rules_apply_inside_every_turn_and_think_blocks_stay_verbatim(tmp_path):
    record = {"messages": [
        {"role": "system", "content": "  Rules:\r\n\r\n- be kind  "},
        {"role": "user", "content": "line one\n\n\nline two\n"},
        {"role": "assistant", "content": "<think>\n\nstep 1\r\n\r\nstep 2\n</think>\n\nThe answer.\n\n"},
    ]}
    expected = ("System: Rules:\n- be kind\n\nUser: line one\nline two\n\n"
                "Assistant: <think>\n\nstep 1\r\n\r\nstep 2\n</think>\nThe answer.")
    assert texts(write_jsonl(tmp_path / "d.jsonl", [record])) == [expected]
    alpaca = {"instruction": "Sum\r\n\r\nthese", "input": "  \n ", "output": "<think>a\n\nb</think>\n\n3"}
    assert texts(write_jsonl(tmp_path / "a.jsonl", [alpaca])) == ["Instruction: Sum\nthese\n\nResponse: <think>a\nb</think>\n3"]
    pair = {"prompt": "<think>x\n\ny</think>", "completion": "<think>x\n\ny</think>ok"}  # verbatim: assistant only
    assert texts(write_jsonl(tmp_path / "p.jsonl", [pair])) == ["User: <think>x\ny</think>\n\nAssistant: <think>x\n\ny</think>ok"]


def test_an_empty_system_turn_is_dropped(tmp_path):
    record = {"conversations": [{"from": "system", "value": ""}, {"from": "human", "value": "a"},
                                {"from": "gpt", "value": "b"}]}
    assert texts(write_jsonl(tmp_path / "d.jsonl", [record])) == ["User: a\n\nAssistant: b"]


# ------------------------------------------------------------------ errors: file, record, field

BAD_RECORDS = [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "tool", "content": "c"}]},
     "role", "messages[2].role 'tool' is not supported (system, user, assistant)"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt"}]}, "missing-field",
     "conversations[1] has no 'value'"),
    ({"conversations": [{"from": "bot", "value": "a"}]}, "role",
     "conversations[0].from 'bot' is not supported (system, human, user, gpt, assistant)"),
    ({"messages": []}, "empty-conversation", "messages is an empty conversation"),
    ({"messages": [{"role": "system", "content": ""}]}, "empty-conversation", "messages is an empty conversation"),
    ({"messages": "hi"}, "field-type", "messages is a str, not a list"),
    ({"messages": ["hi"]}, "field-type", "messages[0] is a str, not an object"),
    ({"messages": [{"content": "a"}]}, "missing-field", "messages[0] has no 'role'"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "field-type",
     "messages[0].content is a list, not a string"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " \n\n "}]}, "empty-turn",
     "messages[1].content is empty"),
    ({"instruction": "x"}, "missing-field", "the record has no 'output'"),
    ({"instruction": "", "output": "y"}, "empty-turn", "instruction is empty"),
    ({"instruction": "x", "input": 3, "output": "y"}, "field-type", "input is a int, not a string"),
    ({"prompt": "x"}, "missing-field", "the record has no 'completion'"),
    ({"question": "x", "answer": None}, "missing-field", "the record has no 'answer'"),
    ({"title": "x", "body": "y"}, "no-text", "no \"text\" field, nor another record format's fields (fields: title, body)"),
]


@pytest.mark.parametrize("record, kind, message", BAD_RECORDS)
def test_every_error_names_the_line_and_the_field(tmp_path, record, kind, message):
    path = write_jsonl(tmp_path / "d.jsonl", [CHAT[0][0]] * 8 + [record])
    bad = list(read_samples(path))[-1]
    assert (bad.where, bad.error.kind, bad.error.message) == ("line 9", kind, message)
    with pytest.raises(DataError) as exc:
        texts(path)
    assert str(exc.value).startswith(f"{path}:9: {message}") and "data check" in exc.value.hint
    issue = next(i for i in check_jsonl(path).errors if i.kind == kind)
    assert (issue.location(), issue.message) == ("line 9", message)


def test_a_row_error_says_row_and_names_the_file_and_field(tmp_path):
    records = [CHAT[i % 5][0] for i in range(16)] + [BAD_RECORDS[0][0]]
    path = write_parquet(tmp_path / "d.parquet", records, row_group_size=5)
    with pytest.raises(DataError) as exc:
        texts(path)
    assert str(exc.value).startswith(f"{path}: row 17: messages[2].role 'tool' is not supported "
                                     "(system, user, assistant)")
    report = check_jsonl(path)
    assert [(i.location(), i.kind) for i in report.errors] == [("row 17", "role")]
    assert report.lines == 17 and report.samples == 16


def test_a_last_turn_that_is_not_the_assistants_is_a_warning(tmp_path):
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "user", "content": "c"}]}
    path = write_jsonl(tmp_path / "d.jsonl", [record])
    sample = next(read_samples(path))
    assert sample.text == "User: a\n\nAssistant: b\n\nUser: c"
    assert [(w.kind, w.message) for w in sample.warnings] == [
        ("no-answer", "messages[2] is the last turn and is User's, not the assistant's")]
    report = check_jsonl(path)
    assert report.ok and [(i.kind, i.line) for i in report.warnings] == [("no-answer", 1)]  # said once, with the field


def test_mixed_formats_are_a_warning_when_every_record_converts_else_an_error(tmp_path):
    alpaca = {"instruction": "i", "output": "o"}
    good = check_jsonl(write_jsonl(tmp_path / "good.jsonl", [CHAT[0][0], CHAT[1][0], alpaca]))
    assert good.ok and good.detected == "mixed: OpenAI messages, Alpaca"
    mixed = next(i for i in good.issues if i.kind == "mixed-records")
    assert mixed.severity == "warning"
    assert mixed.message == "the file mixes record formats: 2 OpenAI messages (first at line 1), 1 Alpaca (first at line 3)"
    bad = check_jsonl(write_jsonl(tmp_path / "bad.jsonl", [CHAT[0][0], alpaca, {"instruction": "i"}]))
    assert {(i.kind, i.severity) for i in bad.issues} >= {("mixed-records", "error"), ("missing-field", "error")}
    single = check_jsonl(write_jsonl(tmp_path / "one.jsonl", [CHAT[0][0], {"messages": []}]))
    assert single.detected == "OpenAI messages" and not any(i.kind == "mixed-records" for i in single.issues)


# ------------------------------------------------------------------ readers


def test_json_array_and_json_holding_jsonl(tmp_path):
    records = [r for r, _ in CASES]
    array = tmp_path / "a.json"
    array.write_text("\ufeff" + json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    assert file_kind(array) == "json-array" and texts(array) == [t for _, t in CASES]
    assert [s.where for s in read_samples(array)][:2] == ["row 1", "row 2"]
    assert (tmp_path / "e.json").write_text(" [ ] ") and texts(tmp_path / "e.json") == []
    lines = write_jsonl(tmp_path / "l.json", records)
    assert file_kind(lines) == "jsonl" and texts(lines) == [t for _, t in CASES]
    assert [s.where for s in read_samples(lines)][:2] == ["line 1", "line 2"]


def test_a_json_array_longer_than_a_read_is_parsed_across_reads(tmp_path, monkeypatch):
    import rwkv_tui.trainer.data.records as records

    monkeypatch.setattr(records, "JSON_READ_CHARS", 7)  # every element and number crosses a read
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": "é" * 30, "n": 123456789}] * 5), encoding="utf-8")
    assert texts(path) == ["é" * 30] * 5


@pytest.mark.parametrize("content, message", [
    ('[{"text": "a"}, {"text": "b" {"text": "c"}]', "invalid JSON: Expecting ',' delimiter (line 1, column 30 of the file)"),
    ('[{"text": "a"}\n {"text": "b"}]', "expected ',' or ']' after the element (line 2, column 2 of the file)"),
    ('[{"text": "a"}, 3]', "the element is a JSON int, not an object"),
    ('[{"text": "a"}] x', "extra characters after the array's closing ] (line 1, column 17 of the file)"),
    ('[{"text": "a"}, {"text": "b', "invalid JSON: Unterminated string starting at (line 1, column 26 of the file)"),
])
def test_json_array_problems_name_the_row(tmp_path, content, message):
    path = tmp_path / "a.json"
    path.write_text(content, encoding="utf-8")
    samples = list(read_samples(path))
    assert samples[0].text == "a"
    assert (samples[-1].where, samples[-1].error.message) == ("row 2", message)


def test_csv_and_tsv_with_a_header(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:  # a spreadsheet's BOM
        writer = csv.writer(handle)
        writer.writerow(["instruction", "input", "output"])
        writer.writerow(["Add, then\r\n\r\nexplain", "", "x" * 200_000])  # longer than csv's default field limit
        writer.writerow([])
        writer.writerow(["Say", "it", "done"])
    assert texts(path) == ["Instruction: Add, then\nexplain\n\nResponse: " + "x" * 200_000,
                           "Instruction: Say\n\nInput: it\n\nResponse: done"]
    assert [s.where for s in read_samples(path)] == ["row 1", "row 2"]
    assert detect_format(path) == formats.ALPACA
    tsv = tmp_path / "d.tsv"
    tsv.write_text("prompt\tcompletion\nhi\tyo\n", encoding="utf-8")
    assert texts(tsv) == ["User: hi\n\nAssistant: yo"]


def test_csv_problems_name_the_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text\nfine\n"a","b"\n', encoding="utf-8")
    bad = list(read_samples(path))[-1]
    assert (bad.where, bad.error.message) == ("row 2", "the row has 2 fields, the header 1")
    path.write_text('text\nfine\n"open\n', encoding="utf-8")
    bad = list(read_samples(path))[-1]
    assert bad.where == "row 2" and bad.error.kind == "csv"


def test_parquet_is_streamed_by_row_groups(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [r for r, _ in CHAT], row_group_size=2)
    samples = list(read_samples(path))
    assert [s.text for s in samples] == [t for _, t in CHAT]
    assert [s.where for s in samples] == [f"row {i}" for i in range(1, 6)]
    assert samples[-1].end == path.stat().st_size


def test_parquet_spans_are_whole_row_groups_read_by_workers(tmp_path):
    from rwkv_tui.trainer.data.binidx import BinIdx
    from rwkv_tui.trainer.data.prepare import prepare_binidx

    records = [r for r, _ in CHAT] * 3  # 15 rows in row groups of 2
    path = write_parquet(tmp_path / "d.parquet", records, row_group_size=2)
    spans = line_spans(path, 5)
    assert [(s.start, s.end, s.first_line) for s in spans] == [(0, 3, 1), (3, 6, 7), (6, 8, 13)]
    assert [s.line for span in spans for s in read_samples(path, span)] == list(range(1, 16))
    assert [s.text for span in spans for s in read_samples(path, span)] == texts(path)
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"text": t} for t in texts(path)])
    serial = prepare_binidx(plain, tmp_path / "plain", shuffle=False, workers=1)
    parallel = prepare_binidx(path, tmp_path / "pq", shuffle=False, workers=2)
    assert parallel.tokens == serial.tokens
    assert BinIdx(tmp_path / "pq").tokens.tolist() == BinIdx(tmp_path / "plain").tokens.tolist()
    # Columns are shared: a row's missing field is a null cell, read as absent.
    alpaca = write_parquet(tmp_path / "a.parquet", [{"instruction": "i", "input": None, "output": "o"}])
    assert texts(alpaca) == ["Instruction: i\n\nResponse: o"]


def test_arrow_files_and_streams(tmp_path):
    table = pa.Table.from_pylist([r for r, _ in CHAT])
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    for name in ("f.arrow", "s.arrow"):
        samples = list(read_samples(tmp_path / name))
        assert [s.text for s in samples] == [t for _, t in CHAT]
        ends = [s.end for s in samples]  # progress in bytes: a stream's end-of-stream marker is never read
        assert ends == sorted(ends) and 0.9 < ends[-1] / (tmp_path / name).stat().st_size <= 1
    (tmp_path / "bad.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(DataError, match="not an Arrow IPC file or stream"):
        texts(tmp_path / "bad.arrow")


def test_a_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    records = [r for r, _ in CHAT] * 3
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "ds"), num_shards=2)
    assert len(list((tmp_path / "ds").glob("*.arrow"))) == 2
    samples = list(read_samples(tmp_path / "ds"))
    assert [s.text for s in samples] == [t for _, t in CHAT] * 3
    assert [s.line for s in samples] == list(range(1, 16))  # numbered across the shards
    assert detect_format(tmp_path / "ds") == formats.MESSAGES and first_text(tmp_path / "ds") == CHAT[0][1]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(records)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="a DatasetDict folder") as exc:
        texts(tmp_path / "dd")
    assert "dd/train" in exc.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .arrow files"):
        texts(tmp_path / "empty")


def test_without_pyarrow_a_parquet_asks_to_install_it(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "d.parquet", [CHAT[0][0]])
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    with pytest.raises(DataError) as exc:
        texts(path)
    assert exc.value.hint == INSTALL_HINT and "rwkv-tui[data]" in INSTALL_HINT
    assert first_text(path) is None  # the preview shows nothing rather than failing


def test_the_same_texts_train_the_same_from_every_kind_of_file(tmp_path):
    """The corpus (token cache) of a parquet equals that of the {"text"} jsonl of its conversion."""
    datasets = pytest.importorskip("datasets")
    plain = load_jsonl_corpus(write_jsonl(tmp_path / "plain.jsonl", [{"text": t} for _, t in CHAT]))
    parquet = load_jsonl_corpus(write_parquet(tmp_path / "chat.parquet", [r for r, _ in CHAT]))
    datasets.Dataset.from_list([r for r, _ in CHAT]).save_to_disk(str(tmp_path / "ds"))
    folder = load_jsonl_corpus(tmp_path / "ds")
    for corpus in (parquet, folder):
        assert corpus.tokens.tolist() == plain.tokens.tolist() and corpus.masks.tolist() == plain.masks.tolist()


def test_check_cli_prints_the_detected_format(tmp_path, capsys):
    from rwkv_tui.cli import main

    assert main(["data", "check", str(write_parquet(tmp_path / "d.parquet", [r for r, _ in CHAT]))]) == 0
    assert "detected: OpenAI messages" in capsys.readouterr().out
    assert main(["data", "check", str(write_jsonl(tmp_path / "d.jsonl", [r for r, _ in CHAT])), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["detected"] == "OpenAI messages"


# ------------------------------------------------------------------ memory stays flat


def test_a_big_json_array_is_read_in_flat_memory(tmp_path, monkeypatch):
    """4 MB of json array read 64 KB at a time: the reader holds a few reads, never the file."""
    import rwkv_tui.trainer.data.records as records

    monkeypatch.setattr(records, "JSON_READ_CHARS", 1 << 16)
    record = json.dumps(CASES[0][0]) + ","
    path = tmp_path / "big.json"
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        out.write(record * (4 * 2**20 // len(record)))
        out.write(record[:-1] + "]")
    tracemalloc.start()
    try:
        count = sum(1 for sample in read_samples(path) if sample.text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count > 4 * 2**20 // len(record) and peak < 2**20


@pytest.mark.slow
def test_a_big_parquet_is_read_in_flat_memory(tmp_path):
    """64 MB of parquet text in 16 row groups: Arrow's pool peaks near one row group, not the file."""
    path = tmp_path / "big.parquet"
    rows = [{"prompt": f"q{i} " + "w" * 4000, "completion": f"a{i}"} for i in range(1000)]
    with pq.ParquetWriter(path, pa.Table.from_pylist(rows).schema, compression="none") as writer:
        for _ in range(16):
            writer.write_table(pa.Table.from_pylist(rows))
    code = ("import pyarrow as pa\nfrom rwkv_tui.trainer.data.records import read_samples\n"
            f"n = sum(1 for s in read_samples({str(path)!r}) if s.text)\n"
            "print(n, pa.default_memory_pool().max_memory())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, peak = map(int, out.stdout.split())
    assert count == 16_000 and peak < 24 * 2**20
