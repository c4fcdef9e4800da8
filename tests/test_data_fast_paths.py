"""The fast paths of data conversion and prepare give exactly what the careful paths give:
`formats.quick_convert` (every well-formed conversation/Alpaca record of a big file) against
`formats.convert`, and prepare's positioned reads of the staging files against the documents
in their seeded order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rwkv_tui.trainer.data import formats
from rwkv_tui.trainer.data.binidx import BinIdx
from rwkv_tui.trainer.data.prepare import _read_runs, _runs, prepare_binidx
from rwkv_tui.trainer.data.records import read_samples
from rwkv_tui.trainer.data.tokenize import tokenize_file
from rwkv_tui.trainer.errors import DataError

WELL_FORMED = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
    {"messages": [{"role": "system", "content": "  Rules:\r\n\r\n- be kind  "},
                  {"role": "user", "content": "line one\n\n\nline two\n"},
                  {"role": "assistant", "content": "<think>\n\nstep 1\r\n\r\nstep 2\n</think>\n\nThe answer.\n\n"}]},
    {"messages": [{"role": "user", "content": "<think>a\n\nb</think> lone\rcarriage"},
                  {"role": "assistant", "content": " 4 "}], "id": 7},
    {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"},
                       {"from": "user", "value": "And\r\n3+3?"}, {"from": "assistant", "value": "6"}]},
    {"conversations": [{"from": "system", "value": "Terse."}, {"from": "human", "value": "a"},
                       {"from": "gpt", "value": "b"}]},
    {"instruction": "Translate.", "input": "chat", "output": "cat"},
    {"instruction": "Sum\r\n\r\nthese", "input": "  \n ", "output": "<think>a\n\nb</think>\n\n3"},
    {"instruction": "Name a colour.", "output": "Blue", "input": None},
]

# Each goes the careful way: converted with a warning or a dropped turn, or refused with its problem.
UNUSUAL = [
    {"conversations": [{"from": "system", "value": ""}, {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
    {"messages": [{"role": "user", "content": "a"}]},  # last turn not the assistant's: a warning
    {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "c"}]},
    {"messages": [{"role": ["user"], "content": "a"}]},  # an unhashable role
    {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " \n\n "}]},
    {"messages": ["hi"]},
    {"messages": "hi"},
    {"messages": []},
    {"instruction": "x", "input": 3, "output": "y"},
    {"instruction": "", "output": "y"},
    {"instruction": "x"},
    {"prompt": "Say hi", "completion": "hi"},  # pairs always take `convert`
]


@pytest.mark.parametrize("record", WELL_FORMED)
def test_quick_convert_gives_convert_s_text(record):
    fmt = formats.record_format(record)
    converted = formats.convert(record, fmt)
    assert isinstance(converted, formats.Converted) and not converted.warnings
    assert formats.quick_convert(record) == (fmt, converted.text)


@pytest.mark.parametrize("record", UNUSUAL)
def test_quick_convert_leaves_the_unusual_to_convert(record, tmp_path):
    assert formats.quick_convert(record) is None
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    sample = next(read_samples(path))
    converted = formats.convert(record, formats.record_format(record))
    if isinstance(converted, formats.FormatProblem):
        assert sample.error.message == converted.message
    else:
        assert sample.text == converted.text and len(sample.warnings) == len(converted.warnings)


def test_read_samples_takes_the_quick_path_with_the_format_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in WELL_FORMED), encoding="utf-8")
    samples = list(read_samples(path))
    assert [(s.format, s.text) for s in samples] == [formats.quick_convert(r) for r in WELL_FORMED]
    bad = {"messages": [{"role": "user", "content": "x\ud800"}, {"role": "assistant", "content": "y"}]}
    path.write_text(json.dumps(bad) + "\n", encoding="utf-8")  # ensure_ascii keeps the lone escape
    assert next(read_samples(path)).error.kind == "surrogate"


def test_runs_join_documents_that_lie_back_to_back():
    starts, sizes = np.array([0, 3, 5, 20, 9, 12]), np.array([3, 2, 4, 1, 3, 2])
    assert _runs(starts, sizes) == ([0, 20, 9], [9, 1, 5])
    assert _runs(np.zeros(0, np.int64), np.zeros(0, np.int64)) == ([], [])


def test_reading_runs_gathers_them_and_a_short_file_is_an_error(tmp_path):
    staged = tmp_path / "tokens.u16"
    staged.write_bytes(np.arange(30, dtype=np.uint16).tobytes())
    with open(staged, "rb", buffering=0) as handle:
        assert _read_runs(handle, np.uint16, [20, 2], [3, 2]).tolist() == [20, 21, 22, 2, 3]
        with pytest.raises(DataError, match="ended early"):
            _read_runs(handle, np.uint16, [28], [5])


@pytest.mark.parametrize("shuffle, sft_mask", [(True, False), (True, True), (False, True)])
def test_prepare_writes_every_repeat_in_its_seeded_order(tmp_path, shuffle, sft_mask):
    records = [{"messages": [{"role": "user", "content": f"question {i} " * (i % 7 + 1)},
                             {"role": "assistant", "content": f"answer {i}"}]} for i in range(40)]
    source = tmp_path / "chat.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    prepare_binidx(source, tmp_path / "out", repeat=2, seed=5, shuffle=shuffle, sft_mask=sft_mask, workers=1)
    whole = tokenize_file(source, with_masks=True, threads=False)
    ends = np.cumsum(whole.sizes)
    docs = [whole.tokens[e - s: e] for e, s in zip(ends, whole.sizes)]
    masks = [whole.masks[e - s: e] for e, s in zip(ends, whole.sizes)]
    order = [i for r in range(2) for i in
             (np.random.default_rng([5, r]).permutation(40) if shuffle else range(40))]
    written = BinIdx(tmp_path / "out")
    assert [written[i].tolist() for i in range(len(written))] == [docs[i].tolist() for i in order]
    if sft_mask:
        assert (tmp_path / "out.sftmask").read_bytes() == np.concatenate([masks[i] for i in order]).tobytes()


class _UnreadTokens:
    """uint16 tokens that fail the test when scanned."""

    dtype = np.dtype(np.uint16)

    def __len__(self) -> int:
        return 10

    def max(self):
        raise AssertionError("scanned every token")


def test_the_vocab_check_skips_a_scan_no_uint16_id_can_fail():
    from rwkv_tui.trainer.data.corpus import Corpus

    corpus = Corpus(_UnreadTokens(), np.zeros(10, np.uint8), np.array([0, 10]))
    corpus.check_vocab(65536, "d.jsonl")  # the World vocab: every uint16 id is inside, nothing to read
    with pytest.raises(AssertionError, match="scanned"):
        corpus.check_vocab(1000, "d.jsonl")  # a smaller vocab still reads them
    small = Corpus(np.array([5, 0, 1200, 0], np.uint16), np.zeros(4, np.uint8), np.array([0, 2, 4]))
    with pytest.raises(DataError, match="token id 1200 is outside"):
        small.check_vocab(1000, "d.jsonl")
