"""The validation split: data.val_fraction / data.val_path, held out by whole documents before
repeats, deterministic by seed, never overlapping training; `data check` sizes, `data prepare
--val-fraction` writing PREFIX.val.jsonl, and the config's rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rwkv_tui.trainer.config import RunConfig, validate
from rwkv_tui.trainer.data.binidx import BinIdx
from rwkv_tui.trainer.data.check import check_jsonl
from rwkv_tui.trainer.data.prepare import prepare_binidx
from rwkv_tui.trainer.data.split import (document_keys, held_out_count, held_out_mask, split_documents,
                                         split_paths, val_jsonl_path)
from rwkv_tui.trainer.errors import DataError
from rwkv_tui.trainer.world_tokenizer import get_tokenizer


def chat(i: int) -> str:
    return f"User: question number {i}?\n\nAssistant: answer number {i}."


def write_jsonl(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def read_jsonl_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def binidx_texts(prefix: Path) -> list[str]:
    data, tok = BinIdx(prefix), get_tokenizer()
    return [tok.decode(list(data[i][:-1])) for i in range(len(data))]


def data_config(path, val_fraction=0.0, val_path=""):
    config = RunConfig()
    config.data.path, config.data.val_fraction, config.data.val_path = path, val_fraction, val_path
    return config


# ------------------------------------------------------------------ choosing the held-out documents


def test_held_out_count_rounds_keeps_one_of_each_side():
    assert held_out_count(100, 0.1) == 10
    assert held_out_count(10, 0.01) == 1  # a fraction asked for holds out at least one document
    assert held_out_count(3, 0.9) == 2  # and leaves at least one to train on
    assert held_out_count(100, 0.0) == 0


def test_split_is_deterministic_by_seed_and_independent_of_order():
    texts = [chat(i) for i in range(200)]
    held = held_out_mask(document_keys(texts, seed=7), 0.1)
    assert held.sum() == 20
    assert np.array_equal(held, held_out_mask(document_keys(texts, seed=7), 0.1))
    other_seed = held_out_mask(document_keys(texts, seed=8), 0.1)
    assert not np.array_equal(held, other_seed)
    # The same documents are held out whatever their order (a shuffled or re-split file).
    order = np.random.default_rng(0).permutation(len(texts))
    reordered = held_out_mask(document_keys([texts[i] for i in order], seed=7), 0.1)
    assert {texts[i] for i in order[reordered]} == {t for t, h in zip(texts, held) if h}


def test_copies_of_a_held_out_text_are_all_held_out():
    texts = [chat(i) for i in range(50)] * 2  # every text twice
    held = held_out_mask(document_keys(texts, seed=1), 0.2)
    train = {t for t, h in zip(texts, held) if not h}
    val = {t for t, h in zip(texts, held) if h}
    assert val and train and not (train & val)


def test_too_few_or_identical_documents_are_refused(tmp_path):
    with pytest.raises(DataError, match="needs at least 2 documents"):
        held_out_mask(document_keys([chat(0)], seed=0), 0.5, tmp_path / "one.jsonl")
    with pytest.raises(DataError, match="every document"):
        held_out_mask(document_keys([chat(0)] * 5, seed=0), 0.2)


# ------------------------------------------------------------------ split_documents (the evaluation's entry)


def test_split_documents_gives_disjoint_train_and_val_texts(tmp_path):
    texts = [chat(i) for i in range(40)]
    source = write_jsonl(tmp_path / "chat.jsonl", texts)
    config = data_config(str(source), val_fraction=0.25)
    split = split_documents(config.data, seed=42)
    train, val = list(split.train_texts()), list(split.val_texts())
    assert len(val) == 10 and len(train) == 30
    assert sorted(train + val) == sorted(texts) and not set(train) & set(val)
    assert [texts[i] for i in split.train_indices()] == train  # indices in reading order
    assert list(split_documents(config.data, seed=42).val_texts()) == val


def test_split_documents_spans_several_files_and_sources(tmp_path):
    from rwkv_tui.trainer.config import DataSource

    a = write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [chat(i) for i in range(10, 30)])
    config = data_config([str(a)], val_fraction=0.1)
    config.data.sources = [DataSource(str(b), 3)]
    split = split_documents(config.data, seed=0)
    assert len(split.held_out) == 30  # every file once: repeats come after the split
    assert len(list(split.val_texts())) == 3 and len(list(split.train_texts())) == 27


def test_val_path_is_the_validation_set_and_all_training_documents_stay(tmp_path):
    source = write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(5)])
    val = write_jsonl(tmp_path / "val.jsonl", [chat(100), chat(101)])
    split = split_documents(data_config(str(source), val_path=str(val)).data, seed=0)
    assert list(split.val_texts()) == [chat(100), chat(101)]
    assert list(split.train_texts()) == [chat(i) for i in range(5)] and split.train_indices() is None


def test_no_split_asked_gives_no_validation_documents(tmp_path):
    source = write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(5)])
    split = split_paths([source])
    assert list(split.val_texts()) == [] and len(list(split.train_texts())) == 5


# ------------------------------------------------------------------ data prepare --val-fraction


def test_prepare_holds_out_whole_documents_before_repeats(tmp_path):
    texts = [chat(i) for i in range(60)]
    source = write_jsonl(tmp_path / "chat.jsonl", texts)
    result = prepare_binidx(source, tmp_path / "out" / "chat", repeat=3, seed=5, val_fraction=0.1, workers=1)
    assert result.val_path == tmp_path / "out" / "chat.val.jsonl" == val_jsonl_path(result.prefix)
    val = read_jsonl_texts(result.val_path)
    trained = binidx_texts(result.prefix)
    assert len(val) == result.val_documents == 6
    assert len(trained) == result.documents == 54 * 3  # the repeats hold only the training documents
    assert not set(val) & set(trained) and set(val) | set(trained) == set(texts)
    assert val == [t for t in texts if t in set(val)]  # file order
    again = prepare_binidx(source, tmp_path / "again" / "chat", seed=5, val_fraction=0.1, workers=1)
    assert read_jsonl_texts(again.val_path) == val  # the seed decides, not the run
    assert val == list(split_paths([source], 0.1, seed=5).val_texts())  # the same split as the engine's


def test_prepare_without_val_fraction_writes_no_val_file(tmp_path):
    source = write_jsonl(tmp_path / "chat.jsonl", [chat(i) for i in range(5)])
    result = prepare_binidx(source, tmp_path / "chat", workers=1)
    assert result.val_path is None and result.val_documents == 0
    assert not (tmp_path / "chat.val.jsonl").exists() and result.documents == 5


def test_prepare_refuses_to_overwrite_a_val_file_and_a_bad_fraction(tmp_path):
    source = write_jsonl(tmp_path / "chat.jsonl", [chat(i) for i in range(5)])
    (tmp_path / "chat.val.jsonl").write_text("mine\n")
    with pytest.raises(DataError, match="output exists"):
        prepare_binidx(source, tmp_path / "chat", val_fraction=0.2, workers=1)
    assert (tmp_path / "chat.val.jsonl").read_text() == "mine\n" and not (tmp_path / "chat.bin").exists()
    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\)"):
        prepare_binidx(source, tmp_path / "other", val_fraction=1.0, workers=1)


def test_prepare_cli_val_fraction(tmp_path, capsys):
    from rwkv_tui.cli import main

    source = write_jsonl(tmp_path / "chat.jsonl", [chat(i) for i in range(20)])
    assert main(["data", "prepare", str(source), "--out", str(tmp_path / "p"), "--val-fraction", "0.25",
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "held out 5 documents for validation" in out and "p.val.jsonl" in out
    assert len(read_jsonl_texts(tmp_path / "p.val.jsonl")) == 5 and len(BinIdx(tmp_path / "p")) == 15


# ------------------------------------------------------------------ data check sizes


def test_check_reports_both_sides_of_a_val_fraction(tmp_path):
    texts = [chat(i) for i in range(40)]
    source = write_jsonl(tmp_path / "chat.jsonl", texts)
    report = check_jsonl(source, val_fraction=0.25, seed=3)
    val = list(split_paths([source], 0.25, seed=3).val_texts())
    tok = get_tokenizer()
    assert report.val_documents == 10 and report.train_documents == 30
    assert report.val_tokens == sum(len(tok.encode(t)) + 1 for t in val)
    assert report.train_tokens + report.val_tokens == report.total_tokens
    assert report.to_dict()["val_documents"] == 10 and report.to_dict()["train_tokens"] == report.train_tokens


def test_check_reports_a_val_file_and_its_overlap_with_training(tmp_path):
    source = write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(10)])
    val = write_jsonl(tmp_path / "val.jsonl", [chat(3), chat(50), chat(51)])
    report = check_jsonl(source, val_path=val)
    assert report.val_documents == 3 and report.train_documents == 10
    assert any(i.kind == "val-overlap" and "1 validation document" in i.message for i in report.warnings)
    missing = check_jsonl(source, val_path=tmp_path / "nope.jsonl")
    assert any(i.kind == "val-file" and "nope.jsonl" in i.message for i in missing.errors)


def test_check_reports_a_split_that_cannot_be_made(tmp_path):
    source = write_jsonl(tmp_path / "one.jsonl", [chat(0)])
    report = check_jsonl(source, val_fraction=0.5)
    assert not report.ok and any(i.kind == "val-split" for i in report.errors)


def test_check_cli_prints_the_split(tmp_path, capsys):
    from rwkv_tui.cli import main

    source = write_jsonl(tmp_path / "chat.jsonl", [chat(i) for i in range(20)])
    assert main(["data", "check", str(source), "--val-fraction", "0.1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "split: train 18 documents" in out and "validation 2 documents" in out
    assert main(["data", "check", str(source), "--val-fraction", "0.1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_documents"] == 2


# ------------------------------------------------------------------ config rules


def problems_of(config) -> dict[str, str]:
    return {p.field + ": " + p.message: p.fix for p in validate(config) if p.field.startswith("data.val")}


def test_config_accepts_one_validation_source(tmp_path):
    assert not problems_of(data_config("train.jsonl", val_fraction=0.05))
    assert not problems_of(data_config("train.jsonl", val_path="val.parquet"))


def test_config_rejects_bad_validation_settings():
    assert "data.val_fraction: must be in [0, 1), got 1.0" in problems_of(data_config("t.jsonl", val_fraction=1.0))
    both = problems_of(data_config("t.jsonl", val_fraction=0.1, val_path="v.jsonl"))
    assert "data.val_fraction: val_path and val_fraction are both set" in both
    same = problems_of(data_config("t.jsonl", val_path="t.jsonl"))
    assert "data.val_path: t.jsonl is also the training data" in same
    binidx = problems_of(data_config("data/prefix", val_fraction=0.1))
    assert any("binidx prefix holds tokens" in k and "PREFIX.val.jsonl" in h for k, h in binidx.items())
    assert "data.val_path: data/prefix is not a record file" in problems_of(data_config("t.jsonl",
                                                                                         val_path="data/prefix"))


def test_config_loads_val_settings_from_toml_values():
    from rwkv_tui.trainer.config import coerce_value

    assert coerce_value("data.val_fraction", 0) == 0.0 and coerce_value("data.val_fraction", "0.05") == 0.05
    assert coerce_value("data.val_path", "val.jsonl") == "val.jsonl"


def test_training_never_sees_the_held_out_documents(tmp_path):
    from rwkv_tui.trainer.data.datasets import HeldOut, build_dataset

    source = write_jsonl(tmp_path / "chat.jsonl", [chat(i) for i in range(20)])
    config = data_config(source, val_fraction=0.25)
    split = split_documents(config.data, seed=7)
    held_out = list(split.val_texts())
    assert len(held_out) == 5
    dataset = build_dataset(str(source), ctx_len=64, seed=7, cache_dir=tmp_path / "cache",
                            held_out=HeldOut(0.25, 7))
    tokenizer = get_tokenizer()
    trained = {tokenizer.decode(dataset.corpus.document(i)[0][:-1].tolist()) for i in range(len(dataset))}
    assert len(trained) == 15 and trained == set(split.train_texts())
    assert not trained & set(held_out)
    whole = build_dataset(str(source), ctx_len=64, cache_dir=tmp_path / "cache")  # no split: every document
    assert len(whole) == 20
