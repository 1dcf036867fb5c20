import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli import ROOT

from embedlab.recipes.benchmark import ENCODE_JOBS, TRAIN_JOBS, regressions, summarise


def run_benchmark_script(*overrides: str, run_dir, model_dir, data_dir, timeout: int = 300
                         ) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "scripts/benchmark.py", f"model_path={model_dir}", f"paths.data_dir={data_dir}",
               f"hydra.run.dir={run_dir}", "train.steps=2", "train.warmup_steps=1", "threads=1", "encode.exports=[]",
               "sentence_transformers.backends=[]", *overrides]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_benchmark_runs_both_sides_interleaved_and_writes_every_key(tmp_path, tiny_model_dir, tiny_data_dir):
    # fp32 eager on the project's side too, so that the rankings below can be compared exactly: the random tiny
    # model's cosines sit so close together that bf16 reorders some of them.
    result = run_benchmark_script("repeats=2", "encode.precision=32-true", "encode.compile=false", run_dir=tmp_path,
                                  model_dir=tiny_model_dir, data_dir=tiny_data_dir)
    results = json.loads((tmp_path / "benchmark.json").read_text())
    for job in [*TRAIN_JOBS, *ENCODE_JOBS]:
        unit = "sentences_per_second" if job in ENCODE_JOBS else "pairs_per_second"
        for side in ("project", "sentence_transformers"):
            assert results[f"{job}/{side}/{unit}"] > 0
            assert -1 <= results[f"{job}/{side}/test_spearman_cosine"] <= 1
        assert results[f"{job}/ratio"] > 0
        assert f"| {job} |" in result.stdout
    # The same untrained model, encoded by either side, ranks the pairs alike.
    assert results["encode_bs32/project/test_spearman_cosine"] == pytest.approx(
        results["encode_bs32/sentence_transformers/test_spearman_cosine"], abs=1e-6)


@pytest.mark.slow
def test_exports_and_peer_backends_are_sides_of_the_encode_jobs(tmp_path, tiny_model_dir, tiny_data_dir):
    # The peer environment is optional: without it its backends are skipped with a note, and the test checks that.
    venv = Path(os.environ.get("EMBEDLAB_PEER_VENV", ROOT.parent / "venv-st-onnx"))
    peer = (venv / "bin" / "python").exists()
    result = run_benchmark_script("repeats=1", "jobs=[encode_bs32]", "encode.exports=[onnx_int8]",
                                  "sentence_transformers.backends=[onnx]", f"sentence_transformers.venv={venv}",
                                  "encode.precision=32-true", "encode.compile=false", run_dir=tmp_path,
                                  model_dir=tiny_model_dir, data_dir=tiny_data_dir, timeout=600)
    results = json.loads((tmp_path / "benchmark.json").read_text())
    sides = ["project_onnx_int8", *(["sentence_transformers_onnx"] if peer else [])]
    for side in sides:
        assert results[f"encode_bs32/{side}/sentences_per_second"] > 0
        assert results[f"encode_bs32/{side}/ratio"] > 0
        assert f"| encode_bs32 | {side} |" in result.stdout
    if peer:
        # sentence-transformers' ONNX graph of the same fp32 model ranks the pairs as its torch path does.
        assert results["encode_bs32/sentence_transformers_onnx/test_spearman_cosine"] == pytest.approx(
            results["encode_bs32/sentence_transformers/test_spearman_cosine"], abs=1e-6)
    else:
        assert "note: sentence-transformers' onnx backends skipped: no peer environment" in result.stdout


@pytest.mark.slow
def test_full_mode_adds_the_final_quality_of_whole_training_runs(tmp_path, tiny_model_dir, tiny_data_dir):
    run_benchmark_script("repeats=1", "full=true", "jobs=[train_stsb_cosine]", run_dir=tmp_path,
                         model_dir=tiny_model_dir, data_dir=tiny_data_dir)
    results = json.loads((tmp_path / "benchmark.json").read_text())
    project_run = json.loads((tmp_path / "full" / "train_stsb_cosine" / "project" / "results.json").read_text())
    assert results["train_stsb_cosine/project/full_test_spearman_cosine"] == project_run["test/stsb/spearman_cosine"]
    for side in ("project", "sentence_transformers"):
        assert -1 <= results[f"train_stsb_cosine/{side}/full_test_spearman_cosine"] <= 1
        assert results[f"train_stsb_cosine/{side}/full_samples_per_second"] > 0


def test_ratio_is_the_median_of_the_interleaved_ratios():
    summary = summarise("encode_bs32", {"project": [10.0, 30.0, 20.0], "sentence_transformers": [10.0, 10.0, 40.0],
                                        "project_onnx": [20.0, 40.0, 40.0]}, "sentences_per_second")
    assert summary == {"encode_bs32/ratio": 1.0, "encode_bs32/project/sentences_per_second": 20.0,
                       "encode_bs32/sentence_transformers/sentences_per_second": 10.0,
                       "encode_bs32/project_onnx/sentences_per_second": 40.0, "encode_bs32/project_onnx/ratio": 2.0}


def test_throughput_guard_fails_only_below_the_baseline_ratio():
    results = {"encode_bs32/ratio": 1.4, "train_stsb_cosine/ratio": 0.9}
    assert regressions(results, {"encode_bs32": 1.0, "train_stsb_cosine": 0.8}) == []
    problems = regressions(results, {"encode_bs32": 1.5, "train_stsb_cosine": 0.8})
    assert problems == ["encode_bs32: ratio 1.40 is below the baseline 1.50"]
