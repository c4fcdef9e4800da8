"""Several data files at once (issue 15, points 3 and 4): `data convert`, `data check A B` with
duplicates across files, `data prepare A B --out P`, data.path as a list and [[data.sources]] with
per-file repeats, in the config, the datasets and a training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rwkv_tui.trainer.config import (DataSource, RunConfig, config_from_dict, load_config, save_config,
                                     validate)
from rwkv_tui.trainer.data.binidx import BinIdx
from rwkv_tui.trainer.data.check import check_files, cross_file_duplicates
from rwkv_tui.trainer.data.datasets import build_dataset, prepare_token_cache, sources_cache_prefix
from rwkv_tui.trainer.data.prepare import SourceFile, prepare_binidx
from rwkv_tui.trainer.errors import ConfigError, DataError

CHAT = ["User: hi %d\n\nAssistant: hello %d" % (i, i) for i in range(6)]
GENERAL = ["Plain general text number %d." % i for i in range(4)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def documents(prefix: Path) -> list[list[int]]:
    data = BinIdx(prefix)
    offsets = np.concatenate([[0], np.cumsum(data.sizes)])
    return [data.tokens[offsets[i]:offsets[i + 1]].tolist() for i in range(len(data))]


@pytest.fixture
def two_files(tmp_path):
    return write_jsonl(tmp_path / "chat.jsonl", CHAT), write_jsonl(tmp_path / "general.jsonl", GENERAL)


# ---------------------------------------------------------------------------------------- config


def test_sources_tables_and_a_path_list_round_trip_through_toml(tmp_path):
    preset = tmp_path / "mix.toml"
    preset.write_text('[data]\npath = ["a.jsonl", "b.parquet"]\n\n'
                      '[[data.sources]]\npath = "chat.jsonl"\nrepeat = 3\n\n'
                      '[[data.sources]]\npath = "general.csv"\n', encoding="utf-8")
    config = load_config(preset)
    assert config.data.path == ["a.jsonl", "b.parquet"]
    assert config.data.sources == [DataSource("chat.jsonl", 3), DataSource("general.csv", 1)]
    assert [(s.path, s.repeat) for s in config.data.all_sources()] == [
        ("a.jsonl", 1), ("b.parquet", 1), ("chat.jsonl", 3), ("general.csv", 1)]
    assert load_config(save_config(config, tmp_path / "saved.toml")) == config
    assert load_config(save_config(config, tmp_path / "full.toml", only_changes=False)) == config


def test_a_single_path_stays_a_single_file():
    config = RunConfig()
    config.data.path = "chat.jsonl"
    assert config.data.is_single_file() and config.data.all_sources() == [DataSource("chat.jsonl", 1)]
    config.data.sources = [DataSource("chat.jsonl", 2)]
    assert not config.data.is_single_file()


@pytest.mark.parametrize("sources, message", [
    ([{"path": "a.jsonl", "repeat": "3"}], "repeat '3' is not a whole number"),
    ([{"path": "a.jsonl", "weight": 2}], "unknown key 'weight'"),
    ([{"repeat": 2}], "must be a table with a path"),
    ("a.jsonl", "is not a list of tables"),
])
def test_bad_sources_tables_name_the_setting(sources, message):
    with pytest.raises(ConfigError, match=message) as caught:
        config_from_dict({"data": {"sources": sources}})
    assert caught.value.field == "data.sources"


def test_bad_path_lists_are_refused():
    with pytest.raises(ConfigError, match="not a path or a list of paths"):
        config_from_dict({"data": {"path": ["a.jsonl", 3]}})


def data_problems_of(**data) -> dict[str, str]:
    config = config_from_dict({"model": {"path": "m.pth"}, "data": data})
    return {p.field: p.message for p in validate(config)}


def test_validation_of_sources(tmp_path):
    assert data_problems_of(sources=[{"path": "a.jsonl", "repeat": 2}]) == {}
    assert "data.path" not in data_problems_of(sources=[{"path": "a.jsonl"}])  # sources alone are data
    assert data_problems_of(sources=[{"path": "a.jsonl", "repeat": 0}]) == {
        "data.sources[0].repeat": "must be 1 to 10,000, got 0"}
    assert data_problems_of(sources=[{"path": ""}])["data.sources[0].path"] == "is empty"
    mixed = data_problems_of(path=["a.jsonl", str(tmp_path / "prepared")])
    assert "is a binidx prefix: only record files" in mixed["data.path"]
    assert "need record files" in data_problems_of(path=["a", "b"], data_type="binidx")["data.data_type"]
    assert "is a record file" in data_problems_of(path="a.parquet", data_type="binidx")["data.data_type"]


# ---------------------------------------------------------------------------------------- prepare


def test_one_source_in_a_list_is_byte_identical_to_the_path(tmp_path, two_files):
    chat, _ = two_files
    outputs = []
    for i, source in enumerate([chat, [chat], [SourceFile(chat, 1)], [(str(chat), 1)]]):
        prefix = tmp_path / f"out{i}"
        prepare_binidx(source, prefix, repeat=2, seed=5, sft_mask=True, workers=1)
        outputs.append([(prefix.with_suffix(s)).read_bytes() for s in (".bin", ".idx", ".sftmask")])
    assert all(out == outputs[0] for out in outputs[1:])


def test_sources_hold_each_file_repeat_times(tmp_path, two_files):
    chat, general = two_files
    single_chat = documents(prepare_binidx(chat, tmp_path / "c", shuffle=False, workers=1).prefix)
    single_general = documents(prepare_binidx(general, tmp_path / "g", shuffle=False, workers=1).prefix)
    result = prepare_binidx([(chat, 2), general], tmp_path / "mix", shuffle=False, workers=1)
    assert result.documents == 2 * len(CHAT) + len(GENERAL)
    assert documents(result.prefix) == single_chat * 2 + single_general
    shuffled = prepare_binidx([(chat, 2), general], tmp_path / "mixed", repeat=2, seed=1, workers=1)
    got = documents(shuffled.prefix)
    assert shuffled.documents == 2 * (2 * len(CHAT) + len(GENERAL))
    assert sorted(got) == sorted((single_chat * 2 + single_general) * 2) and got != sorted(got)


def test_a_bad_line_in_the_second_file_names_that_file(tmp_path, two_files):
    chat, _ = two_files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "oops"}\n', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        prepare_binidx([chat, bad], tmp_path / "out", workers=1)
    assert caught.value.line == 2 and str(bad) in str(caught.value)
    assert not (tmp_path / "out.bin").exists()


def test_an_empty_or_missing_source_is_named(tmp_path, two_files):
    chat, _ = two_files
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no samples") as caught:
        prepare_binidx([chat, empty], tmp_path / "out", workers=1)
    assert str(empty) in str(caught.value)
    with pytest.raises(DataError, match="not found"):
        prepare_binidx([chat, tmp_path / "missing.jsonl"], tmp_path / "out", workers=1)
    with pytest.raises(DataError, match="repeat must be at least 1"):
        prepare_binidx([(chat, 0)], tmp_path / "out", workers=1)


# ---------------------------------------------------------------------------------------- datasets


def test_training_reads_every_source_with_its_repeat_from_one_cache(tmp_path, two_files):
    chat, general = two_files
    sources = [DataSource(str(chat), 3), DataSource(str(general), 1)]
    cache = tmp_path / "cache"
    prepare_token_cache(sources, "auto", cache)
    prefix = sources_cache_prefix(sources, cache)
    made = prefix.with_suffix(".bin").stat().st_mtime_ns
    dataset = build_dataset(sources, ctx_len=16, loading="pad", cache_dir=cache)
    assert len(dataset) == 3 * len(CHAT) + len(GENERAL)
    assert prefix.with_suffix(".bin").stat().st_mtime_ns == made  # the cache is made once
    assert sources_cache_prefix([DataSource(str(chat), 2), sources[1]], cache) != prefix  # a new repeat: new cache
    # One file read once keeps its own cache, exactly as before sources existed.
    assert len(build_dataset([DataSource(str(chat), 1)], ctx_len=16, cache_dir=cache)) == len(CHAT)
    assert not list(cache.glob(".sources-*.sftmask"))[1:]


def test_a_binidx_prefix_cannot_be_mixed(tmp_path, two_files):
    chat, general = two_files
    prefix = prepare_binidx(general, tmp_path / "general", workers=1).prefix
    with pytest.raises(DataError, match="only record files can be mixed"):
        build_dataset([DataSource(str(chat)), DataSource(str(prefix))], ctx_len=16, cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------- check


def test_duplicates_across_files_are_reported_with_where_they_were_first(tmp_path, two_files):
    chat, general = two_files
    third = write_jsonl(tmp_path / "third.jsonl", [GENERAL[2], "new text", CHAT[0], CHAT[0]])
    count, examples = cross_file_duplicates([chat, general, third])
    assert count == 3  # CHAT[0] twice in third (within-file repeats are the file's own report), GENERAL[2] once
    assert [(Path(e.path).name, e.line, Path(e.first_path).name, e.first_line) for e in examples] == [
        ("third.jsonl", 1, "general.jsonl", 3), ("third.jsonl", 3, "chat.jsonl", 1),
        ("third.jsonl", 4, "chat.jsonl", 1)]
    report = check_files([chat, general, third], ctx_len=64)
    assert report.ok and report.cross_duplicates == 3 and len(report.reports) == 3
    assert report.reports[2].duplicates == 1
    assert cross_file_duplicates([chat, general]) == (0, [])


# ---------------------------------------------------------------------------------------- commands


def test_data_check_of_several_files(tmp_path, two_files, capsys, monkeypatch):
    from rwkv_tui.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # long temporary paths on one line
    chat, general = two_files
    copy = write_jsonl(tmp_path / "copy.jsonl", CHAT[:2])
    assert main(["data", "check", str(chat), str(copy)]) == 0
    out = capsys.readouterr().out
    assert "duplicates across files: 2" in out and "copy.jsonl line 2: same text as" in out
    assert main(["data", "check", str(chat), str(general), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["cross_duplicates"] == 0 and len(report["files"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n', encoding="utf-8")
    assert main(["data", "check", str(chat), str(bad)]) == 1


def test_data_prepare_of_several_files(tmp_path, two_files, capsys):
    from rwkv_tui.cli import main

    chat, general = two_files
    assert main(["data", "prepare", str(chat), str(general), "--out", str(tmp_path / "p"), "--workers", "1"]) == 0
    assert f"{len(CHAT) + len(GENERAL):,} documents" in capsys.readouterr().out
    assert len(BinIdx(tmp_path / "p")) == len(CHAT) + len(GENERAL)


def test_data_convert_writes_the_text_lines(tmp_path, two_files, capsys):
    from rwkv_tui.cli import main

    chat, general = two_files
    out = tmp_path / "out" / "converted.jsonl"
    assert main(["data", "convert", str(chat), str(general), "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"text": t} for t in CHAT + GENERAL]
    assert f"wrote {out}: {len(CHAT) + len(GENERAL)} records from 2 file(s)" in capsys.readouterr().out
    assert main(["data", "convert", str(chat), "--out", str(out)]) == 2  # exists
    assert "output exists" in capsys.readouterr().err
    assert main(["data", "convert", str(chat), "--out", str(out), "--force"]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(CHAT)


def test_data_convert_stops_at_a_bad_record_and_writes_nothing(tmp_path, two_files, capsys):
    from rwkv_tui.cli import main

    chat, _ = two_files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": ""}\n', encoding="utf-8")
    out = tmp_path / "converted.jsonl"
    assert main(["data", "convert", str(chat), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert 'bad.jsonl:3: "text" is empty' in err
    assert not out.exists() and not list(tmp_path.glob(".converted.jsonl.*"))
    assert main(["data", "convert", str(chat), "--out", str(tmp_path / "x.txt")]) == 2
    assert main(["data", "convert", str(chat), "--out", str(chat), "--force"]) == 2
    assert "one of the inputs" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- a run


def test_a_run_trains_on_sources_and_keeps_them_in_its_config(tmp_path, two_files):
    from conftest import write_tiny_checkpoint
    from rwkv_tui.trainer.training.folder import RunFolder, read_all_events
    from rwkv_tui.trainer.training.loop import run

    chat, general = two_files
    model_path, _ = write_tiny_checkpoint(tmp_path, n_layer=1, n_embd=32, vocab_size=65536, head_size=16)
    config = RunConfig.for_method("lora")
    config.model.path = str(model_path)
    config.data.path = [str(chat)]
    config.data.sources = [DataSource(str(general), 2)]
    config.data.ctx_len, config.data.micro_bsz = 16, 2
    config.epochs.epoch_steps, config.epochs.epoch_count = 3, 1
    config.hardware.accelerator, config.hardware.precision, config.hardware.grad_cp = "cpu", "fp32", False
    config.output.proj_dir = str(tmp_path / "runs")
    result = run(config, tmp_path / "runs" / "mix")
    assert result.reason == "finished" and result.step == 3
    assert [e["kind"] for e in read_all_events(RunFolder.at(tmp_path / "runs" / "mix"))].count("step") == 3
    saved = load_config(tmp_path / "runs" / "mix" / "config.toml")
    assert saved.data.path == [str(chat)] and saved.data.sources == [DataSource(str(general), 2)]
    assert list((tmp_path / "runs" / ".token-cache").glob(".sources-*.sftmask"))


def test_convert_and_prepare_read_chat_messages(tmp_path, two_files, capsys):
    from rwkv_tui.cli import main

    _, general = two_files
    messages = tmp_path / "messages.jsonl"
    messages.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "hello"}]}) + "\n", encoding="utf-8")
    out = tmp_path / "converted.jsonl"
    assert main(["data", "convert", str(messages), str(general), "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[0]) == {"text": "User: hi\n\nAssistant: hello"}
    assert "(detected: OpenAI messages)" in capsys.readouterr().out
    result = prepare_binidx([(messages, 2), general], tmp_path / "mix", shuffle=False, workers=1)
    assert documents(result.prefix)[:2] == documents(prepare_binidx(out, tmp_path / "o", workers=1,
                                                                    shuffle=False).prefix)[:1] * 2
