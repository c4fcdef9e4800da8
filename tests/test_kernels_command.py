"""`rwkv-tui kernels`: what can run here, why the rest cannot, and the timing op=auto would see."""

from __future__ import annotations

import json

import pytest
import torch

from rwkv_tui.cli import main


def test_lists_every_op_with_the_reason_it_cannot_run(capsys):
    assert main(["kernels", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for op in ("cuda", "triton", "fla", "torch_chunked", "torch_sequential"):
        assert op in out
    assert "the CUDA kernel runs on CUDA GPUs" in out


def test_json_report_with_timings(capsys):
    assert main(["kernels", "--device", "cpu", "--time", "--json", "--head-size", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["device"], report["dtype"], report["head_size"]) == ("cpu", "fp32", 16)
    ops = {row["op"]: row for row in report["ops"]}
    assert [row["op"] for row in report["ops"]][0] == "cuda"  # best first
    assert ops["torch_chunked"]["available"] and ops["torch_chunked"]["ms"] > 0
    assert "ms" not in ops["torch_sequential"]  # never a candidate on a GPU, so never timed
    assert not ops["fla"]["available"] and "CUDA" in ops["fla"]["reason"]


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch has CUDA")
def test_build_without_cuda_explains(capsys):
    assert main(["kernels", "--device", "cpu", "--build"]) == 2
    err = capsys.readouterr().err
    assert "cannot build the CUDA WKV7 kernel: this torch build has no CUDA support" in err


def test_asking_for_a_missing_gpu_is_a_usage_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["kernels", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
