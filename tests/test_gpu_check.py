"""bench/gpu_check.py: a clean "no GPU" exit here, and the shape of the JSON it writes on a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load_bench_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _load():
    return load_bench_script("gpu_check")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has a GPU: the check would really run")
def test_without_a_gpu_it_prints_one_no_gpu_line_writes_nothing_and_exits_0(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no GPU"), proc.stdout
    assert not out.exists()


def test_build_result_has_exactly_the_documented_keys():
    gc = _load()
    result = gc.build_result(
        "cuda", {"sentences_per_s": 9000.0, "cosine_min_vs_fp32": 0.998, "dtype": "bfloat16"},
        {"sentences_per_s": 7000.0, "argmax_agreement": 1.0}, 12.5, None,
        onnx_cuda={"available": False}, details={}, errors={})
    assert gc.check_result(result) == []
    assert result["embedder"] == {"sentences_per_s": 9000.0, "cosine_min_vs_fp32": 0.998}  # extras stay out
    assert result["faiss_gpu"] == {"recall_at_10": None, "qps": None}  # a skipped step keeps the shape
    assert {"device", "embedder", "classifier", "finetune_seconds", "faiss_gpu"} <= set(result)
    assert json.loads(json.dumps(result)) == result
    assert gc.check_result({"device": "cuda"})  # missing sections are reported
    broken = dict(result, embedder={"sentences_per_s": 1.0})
    assert any("embedder" in p for p in gc.check_result(broken))


def test_pick_cuda_device_uses_the_core_and_refuses_cpu():
    gc = _load()
    if _has_cuda():
        assert gc.pick_cuda_device("auto")[0].startswith("cuda")
    else:
        device, why = gc.pick_cuda_device("auto")
        assert device is None and why
        device, why = gc.pick_cuda_device("cuda")
        assert device is None and "cuda" in why.lower()


def test_helpers_on_cpu_sized_inputs():
    gc = _load()
    sentences = gc.make_sentences(["a b", "c d", "e f", "g h"], 10)
    assert len(sentences) == 10 and len(set(sentences)) > 4
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert np.allclose(gc._rowwise_cosine(a, a), 1.0)
    section, details = gc.check_faiss_gpu(n_vectors=300, n_queries=5, dim=8)
    if not details["on_gpu"]:  # faiss-cpu: recorded as skipped, the shape kept
        assert section == {"recall_at_10": None, "qps": None} and "skipped" in details
    else:
        assert section["recall_at_10"] > 0.99
