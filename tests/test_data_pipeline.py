"""Data: line-by-line checks, binidx round trips through independent readers, SFT masks, datasets."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rwkv_tui.trainer.data.binidx import BinIdx, write_binidx
from rwkv_tui.trainer.data.check import check_jsonl
from rwkv_tui.trainer.data.corpus import load_jsonl_corpus
from rwkv_tui.trainer.data.datasets import build_dataset
from rwkv_tui.trainer.data.prepare import magic_prime, prepare_binidx
from rwkv_tui.trainer.errors import DataError
from rwkv_tui.trainer.training.sampling import ResumableSampler
from rwkv_tui.trainer.world_tokenizer import get_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "data" / "broken_chat.jsonl"
GOOD = [
    "User: What is water?\n\nAssistant: Water is a clear liquid.",
    "System: You are a guide.\n\nUser: Capital of Guangdong?\n\nAssistant: Guangzhou.",
    "User: Hi!\nHow are you?\n\nAssistant: Fine.\n\nUser: Age?\n\nAssistant: Five.",
    "Instruction: Classify the sentence.\n\nInput: RWKV-7 was released.\n\nResponse: Technology",
    "《标题》\n正文内容，一篇很长的文章。",
]


def write_jsonl(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


# ------------------------------------------------------------------ check


def test_every_bad_line_is_reported_on_its_line():
    before = FIXTURE.read_bytes()
    report = check_jsonl(FIXTURE, ctx_len=8)
    assert FIXTURE.read_bytes() == before  # never modified
    found = {(i.kind, i.line, i.severity) for i in report.issues}
    expected = {
        ("single-newline", 2, "warning"), ("no-answer", 2, "warning"), ("no-space", 3, "warning"),
        ("json", 4, "error"), ("no-text", 6, "error"), ("text-type", 7, "error"), ("empty-text", 8, "error"),
        ("trailing", 9, "error"), ("duplicate", 10, "warning"), ("empty-answer", 11, "warning"),
        ("utf8", 12, "error"), ("crlf", 13, "warning"), ("mixed", 0, "warning"),
    }
    assert expected <= found, expected - found
    json_issue = next(i for i in report.issues if i.kind == "json")
    assert json_issue.column == 10 and "quote" in json_issue.hint and "unterminated" in json_issue.excerpt
    assert "byte 14" in next(i for i in report.issues if i.kind == "utf8").message
    assert not report.ok and report.samples == 7 and report.duplicates == 1
    assert report.formats == {"single-turn": 6, "instruction": 1}


def test_bom_formats_stats_and_steps(tmp_path):
    path = write_jsonl(tmp_path / "ok.jsonl", GOOD)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = check_jsonl(path, ctx_len=16, micro_bsz=2)
    assert [i.kind for i in report.issues] == ["bom", "mixed"]
    assert report.ok
    assert report.formats == {"single-turn": 1, "system": 1, "multi-turn": 1, "instruction": 1, "text": 1}
    tok = get_tokenizer()
    counts = sorted(len(tok.encode(t)) for t in GOOD)
    stats = report.token_stats()
    assert (stats["min"], stats["max"], stats["median"]) == (counts[0], counts[-1], counts[2])
    assert report.total_tokens == sum(counts) + 5
    assert report.over_ctx_len == sum(1 for c in counts if c > 16)
    assert report.steps_per_epoch == 3


def test_check_progress_and_cancel(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", GOOD * 400)
    seen = []
    report = check_jsonl(path, progress=lambda done, total: seen.append((done, total)), cancel=lambda: True)
    assert report.cancelled and 0 < report.samples < 2000 and seen


def test_check_cli_exit_codes(tmp_path, capsys):
    from rwkv_tui.cli import main

    assert main(["data", "check", str(FIXTURE)]) == 1
    out = capsys.readouterr().out
    assert "line 4, column 10" in out and "closing quote is missing" in out
    assert main(["data", "check", str(write_jsonl(tmp_path / "ok.jsonl", GOOD[:2])), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["data", "check", str(tmp_path / "missing.jsonl")]) == 2


# ------------------------------------------------------------------ binidx


def independent_reader(prefix: Path) -> list[list[int]]:
    """Reads MMIDIDX from the byte layout in DESIGN.md, sharing no code with trainer.data."""
    idx = (prefix.parent / (prefix.name + ".idx")).read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    version, dtype_code, n, m = struct.unpack("<QBQQ", idx[9:34])
    assert version == 1 and dtype_code == 8
    sizes = struct.unpack(f"<{n}i", idx[34: 34 + 4 * n])
    pointers = struct.unpack(f"<{n}q", idx[34 + 4 * n: 34 + 12 * n])
    doc_idx = struct.unpack(f"<{m}q", idx[34 + 12 * n: 34 + 12 * n + 8 * m])
    assert list(doc_idx) == list(range(n + 1))
    data = (prefix.parent / (prefix.name + ".bin")).read_bytes()
    return [list(struct.unpack(f"<{s}H", data[p: p + 2 * s])) for s, p in zip(sizes, pointers)]


def test_prepare_round_trips_through_an_independent_reader(tmp_path, capsys):
    from rwkv_tui.cli import main

    source = write_jsonl(tmp_path / "chat.jsonl", GOOD)
    assert main(["data", "prepare", str(source), "--out", str(tmp_path / "out" / "chat"), "--repeat", "3",
                 "--ctx-len", "8", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    docs = independent_reader(tmp_path / "out" / "chat")
    tok = get_tokenizer()
    assert len(docs) == 15
    assert all(d[-1] == 0 for d in docs)
    texts = [tok.decode(d[:-1]) for d in docs]
    for r in range(3):  # every repeat holds every sample once, each repeat in its own order
        assert sorted(texts[5 * r: 5 * r + 5]) == sorted(GOOD)
    assert texts[:5] != texts[5:10] or texts[5:10] != texts[10:15]
    total = sum(len(d) for d in docs)
    assert f"--my_exit_tokens {total} --magic_prime {magic_prime(total, 8)} --ctx_len 8" in out
    assert [list(BinIdx(tmp_path / "out" / "chat")[i]) for i in range(15)] == docs


def test_magic_prime_matches_make_data_rule():
    assert magic_prime(96, 4) == 23  # 96 // 4 - 1 = 23: prime and 23 % 3 == 2
    assert magic_prime(1000, 10) == 89  # 99, 98, … 89 is the first prime ≡ 2 (mod 3)
    assert magic_prime(29, 10) is None  # fewer than 3 × ctx_len tokens


def test_make_data_layout_is_read(tmp_path):
    """A binidx built byte by byte like make_data.py/json2binidx (uint16, doc_idx n+1)."""
    docs = [[11, 22, 0], [33, 0], [44, 55, 66, 0]]
    sizes = [len(d) for d in docs]
    pointers = [0, 6, 10]
    header = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 3, 4)
    body = struct.pack("<3i", *sizes) + struct.pack("<3q", *pointers) + struct.pack("<4q", 0, 1, 2, 3)
    (tmp_path / "md.idx").write_bytes(header + body)
    (tmp_path / "md.bin").write_bytes(b"".join(struct.pack(f"<{len(d)}H", *d) for d in docs))
    data = BinIdx(tmp_path / "md")
    assert [list(data[i]) for i in range(3)] == docs and data.n_tokens == 9


def test_binidx_errors_are_specific(tmp_path):
    with pytest.raises(DataError, match="binidx file not found"):
        BinIdx(tmp_path / "none")
    (tmp_path / "x.idx").write_bytes(b"garbage!")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(DataError, match="bad magic"):
        BinIdx(tmp_path / "x")
    write_binidx(tmp_path / "y", [[1, 2, 3, 0]])
    (tmp_path / "y.bin").write_bytes(b"\x01\x00")
    with pytest.raises(DataError, match="shorter than its index"):
        BinIdx(tmp_path / "y")


def test_prepare_workers_after_the_encoder_ran_here(tmp_path):
    """The app checks data (tokenizing in-process) before it prepares it with worker processes.
    Forked workers once waited forever on the parent's Rust thread pool: run in a subprocess so a
    hang fails the test instead of CI, on enough lines for several worker jobs."""
    source = write_jsonl(tmp_path / "many.jsonl", GOOD * 1000)
    script = f"""
from rwkv_tui.trainer.data.prepare import prepare_binidx
from rwkv_tui.trainer.world_tokenizer import get_tokenizer
get_tokenizer().encode_batch(["warm the encoder's thread pool"] * 64)
parallel = prepare_binidx({str(source)!r}, {str(tmp_path / "parallel")!r}, workers=2)
serial = prepare_binidx({str(source)!r}, {str(tmp_path / "serial")!r}, workers=1)
assert parallel.tokens == serial.tokens and parallel.documents == serial.documents == 5000
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    bins = [(tmp_path / f"{name}.bin").read_bytes() for name in ("parallel", "serial")]
    assert bins[0] == bins[1]


def test_interrupted_prepare_leaves_nothing(tmp_path, monkeypatch):
    import rwkv_tui.trainer.data.prepare as prepare

    source = write_jsonl(tmp_path / "chat.jsonl", GOOD)
    real_add_many = prepare.BinIdxWriter.add_many

    def failing_add_many(self, tokens, sizes, masks=None):
        real_add_many(self, tokens, sizes, masks)  # some output is already written…
        raise KeyboardInterrupt  # …when the user presses Ctrl-C

    monkeypatch.setattr(prepare.BinIdxWriter, "add_many", failing_add_many)
    with pytest.raises(KeyboardInterrupt):
        prepare_binidx(source, tmp_path / "out" / "chat", workers=1)
    assert list((tmp_path / "out").iterdir()) == []


def test_prepare_refuses_overwrite_and_bad_lines(tmp_path):
    source = write_jsonl(tmp_path / "chat.jsonl", GOOD)
    prepare_binidx(source, tmp_path / "chat", workers=1)
    with pytest.raises(DataError, match="output exists"):
        prepare_binidx(source, tmp_path / "chat", workers=1)
    prepare_binidx(source, tmp_path / "chat", workers=1, force=True)
    with pytest.raises(DataError) as exc:
        prepare_binidx(FIXTURE, tmp_path / "bad", workers=1)
    assert exc.value.line == 4


# ------------------------------------------------------------------ SFT masks and datasets


def trained_text(tokens, mask) -> str:
    tok = get_tokenizer()
    return tok.decode([int(t) for t, m in zip(tokens, mask) if m and t != 0])


def test_sft_masks_cover_exactly_the_answers(tmp_path):
    corpus = load_jsonl_corpus(write_jsonl(tmp_path / "d.jsonl", GOOD))
    multi_tokens, multi_mask = corpus.document(2)
    assert trained_text(multi_tokens, multi_mask) == " Fine.\n\n Five."
    assert multi_mask[-1] == 1  # the end-of-text after the final answer is learned
    instr_tokens, instr_mask = corpus.document(3)
    assert trained_text(instr_tokens, instr_mask) == " Technology"
    text_tokens, text_mask = corpus.document(4)
    assert text_mask.all()  # plain text: every token trains
    system_tokens, system_mask = corpus.document(1)
    assert trained_text(system_tokens, system_mask) == " Guangzhou."


def test_one_pipeline_gives_make_data_ids_and_per_token_masks():
    from rwkv_tui.trainer.data.sft import token_mask
    from rwkv_tui.trainer.data.tokenize import tokenize_documents

    tok = get_tokenizer()
    ids = [tok.encode(t) + [0] for t in GOOD]
    masks = [token_mask(t, np.array([len(tok.token_bytes(i)) for i in d[:-1]])) for t, d in zip(GOOD, ids)]
    docs = tokenize_documents(GOOD)
    assert docs.tokens.dtype == np.uint16 and docs.tokens.tolist() == [i for d in ids for i in d]
    assert docs.sizes.tolist() == [len(d) for d in ids]
    assert docs.masks.tolist() == np.concatenate(masks).tolist()
    in_a_worker = tokenize_documents(GOOD, with_masks=False, threads=False)
    assert in_a_worker.masks is None and in_a_worker.tokens.tolist() == docs.tokens.tolist()
    assert len(tokenize_documents([]).tokens) == 0


def test_answer_byte_ranges_count_multibyte_characters():
    from rwkv_tui.trainer.data.sft import role_spans, trained_byte_ranges

    text = "User: 你好 😀?\n\nAssistant: 好的 é\n\nUser: 再见\n\nResponse: 👋 bye"

    def byte_offset(i):
        return len(text[:i].encode("utf-8"))
    answers = [(s, e) for role, s, e in role_spans(text) if role in ("Assistant", "Response")]
    expected = [(byte_offset(s), byte_offset(e)) for s, e in answers]
    assert trained_byte_ranges(text) == expected
    assert text.encode("utf-8")[expected[0][0]:expected[0][1]] == " 好的 é\n\n".encode("utf-8")


def test_sft_mask_sidecar_matches_the_jsonl_masks(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", GOOD)
    prepare_binidx(source, tmp_path / "d", sft_mask=True, workers=1)
    from_binidx = build_dataset(tmp_path / "d", ctx_len=64, loading="pad", loss_mask="sft")
    texts = sorted(trained_text(s["targets"].tolist(), s["loss_mask"].tolist())
                   for s in (from_binidx[i] for i in range(5)))
    from_jsonl = build_dataset(source, ctx_len=64, loading="pad", loss_mask="sft")
    expected = sorted(trained_text(s["targets"].tolist(), s["loss_mask"].tolist())
                      for s in (from_jsonl[i] for i in range(5)))
    assert texts == expected and " Technology" in texts


def test_datasets_shapes_padding_and_packing(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", GOOD)
    pad = build_dataset(source, ctx_len=64, loading="pad", loss_mask="sft")
    sample = pad[0]
    assert {k: tuple(v.shape) for k, v in sample.items()} == {"input_ids": (64,), "targets": (64,), "loss_mask": (64,)}
    n = int((sample["targets"] != 0).sum()) + 1
    assert sample["loss_mask"][n:].sum() == 0  # padding is never trained
    assert (sample["input_ids"][1:n] == sample["targets"][: n - 1]).all()
    packed = build_dataset(source, ctx_len=16, loading="pack", loss_mask="none")
    stream = np.concatenate([packed[i]["input_ids"].numpy() for i in range(len(packed))])
    corpus = load_jsonl_corpus(source)
    assert (stream == corpus.tokens[: len(stream)]).all()
    windows = build_dataset(source, ctx_len=16, loading="random", loss_mask="none", seed=3)
    again = build_dataset(source, ctx_len=16, loading="random", loss_mask="none", seed=3)
    assert all((windows[i]["input_ids"] == again[i]["input_ids"]).all() for i in range(5))


def test_passes_over_the_data_reshuffle_documents_and_draw_new_windows(tmp_path):
    """The sampler counts on across passes: documents come back in a new order, windows are new."""
    source = write_jsonl(tmp_path / "d.jsonl", GOOD * 4)
    pad = build_dataset(source, ctx_len=16, loading="pad", loss_mask="none")
    n = len(pad)
    sampler = ResumableSampler(n, seed=1, start=0, length=2 * n)
    indices = list(sampler)
    assert sorted(i % n for i in indices[:n]) == list(range(n)) == sorted(i % n for i in indices[n:])
    assert [i % n for i in indices[:n]] != [i % n for i in indices[n:]]
    assert all((pad[i]["input_ids"] == pad[i % n]["input_ids"]).all() for i in indices)
    windows = build_dataset(source, ctx_len=16, loading="random", loss_mask="none", seed=3)
    m = len(windows)
    first = {tuple(windows[i]["input_ids"].tolist()) for i in range(m)}
    second = {tuple(windows[i]["input_ids"].tolist()) for i in range(m, 2 * m)}
    assert second - first  # not the first pass's windows again
    resumed = ResumableSampler(n, seed=1, start=n + 3, length=5)
    assert list(resumed) == indices[n + 3:n + 8]  # resume replays the same positions


def test_a_document_of_exactly_ctx_len_tokens_is_not_truncated(tmp_path):
    tok = get_tokenizer()
    text = "Hello there, general Kenobi. " * 3
    n = len(tok.encode(text))
    path = write_jsonl(tmp_path / "one.jsonl", [text])
    assert check_jsonl(path, ctx_len=n, micro_bsz=1).over_ctx_len == 0
    assert check_jsonl(path, ctx_len=n - 1, micro_bsz=1).over_ctx_len == 1
    sample = build_dataset(path, ctx_len=n, loading="pad", loss_mask="none")[0]
    assert sample["loss_mask"].sum() == n  # every token and the end-of-text token are targets


def test_jsonl_is_tokenized_once_into_a_mapped_binidx_cache(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", GOOD)
    cache_dir = tmp_path / "cache"
    first = load_jsonl_corpus(source, cache_dir)
    caches = sorted(p.name for p in cache_dir.iterdir())
    assert len(caches) == 3 and {Path(c).suffix for c in caches} == {".bin", ".idx", ".sftmask"}
    assert not first.tokens.flags.owndata and not first.masks.flags.owndata  # views of the mapped files, no copies
    written = {p: p.stat().st_mtime_ns for p in cache_dir.iterdir()}
    again = load_jsonl_corpus(source, cache_dir)
    assert (again.tokens == first.tokens).all() and (again.masks == first.masks).all()
    assert {p: p.stat().st_mtime_ns for p in cache_dir.iterdir()} == written  # read, not tokenized again
    write_jsonl(source, GOOD[:2])  # edited: a new hash, a new cache
    assert len(load_jsonl_corpus(source, cache_dir)) == 2
    assert len(list(cache_dir.iterdir())) == 6
    beside = load_jsonl_corpus(source)  # without a cache folder: beside the file, hidden
    assert len(beside) == 2 and len(list(tmp_path.glob(".d_jsonl-*.bin"))) == 1


def test_token_ids_beyond_the_model_vocab_are_refused(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        build_dataset(source, ctx_len=16, vocab_size=1000)
