"""`rwkv-tui eval` and its scoring core (trainer/evaluation.py), against the official `rwkv` package."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import MATH_CHAT, write_tiny_workspace
from rwkv_oracle import run_official
from rwkv_tui.cli import main
from rwkv_tui.trainer.evaluation import Document, documents_from_texts, evaluate, read_documents
from rwkv_tui.trainer.generate import load_for_chat

LONG = " ".join(f"The number {i} comes after {i - 1}." for i in range(1, 12))  # ~100 tokens: several windows
MESSAGES = {"messages": [{"role": "user", "content": "What is 7 plus 1?"}, {"role": "assistant", "content": "8."}]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    directory = tmp_path_factory.mktemp("eval")
    model, _ = write_tiny_workspace(directory)
    data = directory / "mixed.jsonl"
    records = [{"text": t} for t in MATH_CHAT[:5]] + [{"text": LONG}, MESSAGES, MESSAGES | {"id": 2}]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    state = directory / "tuned-state.pth"
    shapes = torch.load(model, weights_only=True)
    n_layer = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    H, N = shapes["blocks.0.att.r_k"].shape
    generator = torch.Generator().manual_seed(3)
    torch.save({f"blocks.{i}.att.time_state": 0.3 * torch.randn(H, N, N, generator=generator)
                for i in range(n_layer)}, state)
    return directory, model, data, state


@pytest.fixture(scope="module")
def official(workspace):
    """The package's full-sequence logits for every document, from zeros and from the tuned state
    (one subprocess for both; the logits do not depend on the mask)."""
    pytest.importorskip("rwkv")
    directory, model, data, state = workspace
    tuned = torch.load(state, weights_only=True)
    C = torch.load(model, weights_only=True)["emb.weight"].shape[1]
    start = directory / "start_state.pt"  # the package's flat state: (att_x, wkv, ffn_x) per layer, wkv = time_state
    torch.save([t for i in range(len(tuned)) for t in
                (torch.zeros(C), tuned[f"blocks.{i}.att.time_state"].float(), torch.zeros(C))], start)
    documents = read_documents(data, "none")
    jobs = [{"path": str(model), "tokens": d.tokens.tolist()} for d in documents]
    jobs += [{**job, "state": str(start)} for job in jobs]
    out = [result["logits"] for result in run_official(jobs, directory)]
    return {"zeros": out[:len(documents)], "state": out[len(documents):]}


def official_loss(logits: list[torch.Tensor], documents: list[Document]) -> tuple[float, int]:
    """Summed next-token CE over the documents' scored targets from the package's logits, and their count."""
    total, count = 0.0, 0
    for document, doc_logits in zip(documents, logits):
        losses = F.cross_entropy(doc_logits[:-1].double(), torch.from_numpy(document.tokens[1:]), reduction="none")
        total += float((losses * torch.from_numpy(document.trained[1:]).double()).sum())
        count += int(document.trained[1:].sum())
    return total, count


@pytest.mark.slow
@pytest.mark.parametrize("mask", ["none", "sft"])
def test_eval_equals_the_official_package(workspace, official, mask):
    _, model, data, _ = workspace
    documents = read_documents(data, mask)
    expected, count = official_loss(official["zeros"], documents)
    ours = evaluate(load_for_chat(model).eval(), documents, ctx_len=16)  # the long document: 7 windows
    assert ours.total.tokens == count and ours.total.documents == len(documents)
    assert ours.total.loss == pytest.approx(expected / count, rel=1e-5)


@pytest.mark.slow
def test_eval_with_a_tuned_state_equals_the_package_started_from_it(workspace, official):
    _, model, data, state = workspace
    documents = read_documents(data, "none")
    expected, count = official_loss(official["state"], documents)
    ours = evaluate(load_for_chat(model, state=str(state)).eval(), documents, ctx_len=32)
    assert ours.total.loss == pytest.approx(expected / count, rel=1e-5)


@pytest.mark.slow
def test_windows_and_batching_do_not_change_the_result(workspace):
    _, model, data, _ = workspace
    network = load_for_chat(model).eval()
    documents = read_documents(data, "sft")
    one = evaluate(network, documents, ctx_len=1024).total
    assert evaluate(network, documents, ctx_len=5).total.loss == pytest.approx(one.loss, rel=1e-6)
    alone = evaluate(network, documents, ctx_len=1024, batch_tokens=1).total  # one document per forward
    assert alone.loss == pytest.approx(one.loss, rel=1e-6) and alone.tokens == one.tokens


def test_tokens_counted_as_training_counts_them(workspace):
    from rwkv_tui.trainer.data.tokenize import tokenize_documents

    text = "User: Hi?\n\nAssistant: Hello."
    [plain] = documents_from_texts([text], "none")
    [sft] = documents_from_texts([text], "sft")
    tokenized = tokenize_documents([text])
    assert plain.tokens.tolist() == tokenized.tokens.tolist() and plain.tokens[-1] == 0
    assert plain.targets == len(plain.tokens) - 1  # every token but the first is predicted
    assert sft.trained.tolist() == tokenized.masks.astype(bool).tolist()  # training's SFT mask
    assert 0 < sft.targets < plain.targets


@pytest.mark.slow
def test_per_format_numbers_add_up(workspace):
    _, model, data, _ = workspace
    result = evaluate(load_for_chat(model).eval(), read_documents(data, "none"), ctx_len=64)
    assert set(result.formats) == {"text", "OpenAI messages"}
    assert result.formats["OpenAI messages"].documents == 2 and result.formats["text"].documents == 6
    assert sum(s.tokens for s in result.formats.values()) == result.total.tokens
    assert sum(s.loss_sum for s in result.formats.values()) == pytest.approx(result.total.loss_sum)


def test_eval_command_json_is_one_object(workspace, capsys):
    _, model, data, state = workspace
    assert main(["eval", str(model), str(data), "--json", "--ctx-len", "32"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert {"loss", "ppl", "tokens", "documents", "formats"} <= set(result)
    assert result["documents"] == 8 and result["mask"] == "none" and result["ctx_len"] == 32
    assert result["ppl"] == pytest.approx(np.exp(result["loss"]))
    assert set(result["formats"]["text"]) == {"loss", "ppl", "tokens", "documents"}


@pytest.mark.slow
def test_several_adapters_give_a_table_with_the_base(workspace, tmp_path, capsys):
    _, model, data, state = workspace
    other = tmp_path / "other-state.pth"
    torch.save({k: v * 0 for k, v in torch.load(state, weights_only=True).items()}, other)  # zeros: as the base
    assert main(["eval", str(model), str(data), "--adapter", str(state), "--adapter", str(other), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["results"]
    assert [r["adapter"] for r in rows] == [None, str(state), str(other)]
    assert rows[2]["loss"] == pytest.approx(rows[0]["loss"], rel=1e-6) and rows[1]["loss"] != rows[0]["loss"]
    assert main(["eval", str(model), str(data), "--adapter", str(state), "--adapter", str(other)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["model", "loss", "ppl", "tokens"] and "(base)" in table[1]
    assert "loss OpenAI messages" in table[0]  # one loss column per format


def test_eval_errors_are_one_line(workspace, tmp_path, capsys):
    _, model, data, _ = workspace
    assert main(["eval", str(model), str(tmp_path / "missing.jsonl")]) == 2
    assert main(["eval", str(tmp_path / "missing.pth"), str(data)]) == 2
    assert main(["eval", str(model), str(data), "--ctx-len", "0"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"oops": 1}\n')
    assert main(["eval", str(model), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 4 and "bad.jsonl:2" in err
