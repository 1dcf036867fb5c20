"""The retrieval recipes end to end on the tiny model and data: distillation from a cross-encoder in cached stages,
and the side-by-side retrieval benchmark against sentence-transformers."""

import json
import os
import subprocess
import sys

from cli import ROOT, run_command, run_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from embedlab.config import CONF_DIR
from embedlab.modeling.precision import resolve_precision
from embedlab.recipes.distillation import read_rows

TINY_TEACHER = '["model=cross_encoder","loss=bce","evaluation=[]","data.batch_size=8","trainer.max_epochs=1"]'


def test_distillation_trains_a_teacher_on_mined_pairs_and_a_student_on_its_scores(tmp_path, tiny_data_dir,
                                                                                   tiny_model_dir):
    run_dir = tmp_path / "distill"
    overrides = ("experiment=medquad_distill", "precision=32-true", "distill.mining.relative_margin=null",
                 f"distill.teacher={TINY_TEACHER[:-1]},\"backbone.name_or_path={tiny_model_dir}\"]",
                 'distill.student=["loss=margin_mse","evaluation=[medquad]","trainer.max_steps=3"]')
    result = run_train(*overrides, run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    mined = read_rows(run_dir / "mined" / "mined.jsonl")
    pairs = read_rows(run_dir / "teacher" / "pairs.jsonl")
    scored = read_rows(run_dir / "scored" / "scored.jsonl")
    assert len(mined) == len(scored) == 45
    assert {pair["score"] for pair in pairs} == {0.0, 1.0}
    assert sum(pair["score"] for pair in pairs) == len({(row["anchor"], row["positive"]) for row in mined})
    assert all(len(row["scores"]) == 2 and all(0 <= score <= 1 for score in row["scores"]) for row in scored)
    assert [row["negative_1"] for row in scored] == [row["negative_1"] for row in mined]
    results = json.loads((run_dir / "results.json").read_text())
    assert "student/test/medquad-dev/ndcg@10" in results and results["distill/mined_rows"] == 45
    student = (run_dir / "student" / "config.yaml").read_text()
    assert "MarginMSELoss" in student and str(run_dir / "scored" / "scored.jsonl") in student
    assert (run_dir / "model" / "modules.json").exists()
    # Resumed, the recipe reuses its done stages and trains nothing.
    rerun = run_command([sys.executable, "train.py", f"resume={run_dir}"])
    assert rerun.returncode == 0 and "stage teacher: done before" in rerun.stderr + rerun.stdout


def test_mined_negatives_without_a_teacher_train_the_student_on_the_mined_rows(tmp_path, tiny_data_dir,
                                                                              tiny_model_dir):
    run_dir = tmp_path / "mined"
    result = run_train("experiment=medquad_mined", "precision=32-true", "distill.mining.relative_margin=null",
                       'distill.student=["loss=mnr","evaluation=[medquad]","trainer.max_steps=3"]',
                       run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run_dir / "teacher").exists() and not (run_dir / "scored").exists()
    student = OmegaConf.load(run_dir / "student" / "config.yaml")
    assert student.loss._target_.endswith("MultipleNegativesRankingLoss")
    assert student.data.source.local.path == str(run_dir / "mined" / "mined.jsonl")
    assert dict(student.data.source.local.columns) == {"anchor": "anchor", "positive": "positive",
                                                      "negative_1": "negative_1"}
    results = json.loads((run_dir / "results.json").read_text())
    assert "student/test/medquad-dev/ndcg@10" in results and results["distill/mined_rows"] == 45
    assert ((run_dir / "model" / "model.safetensors").read_bytes()
            == (run_dir / "student" / "model" / "model.safetensors").read_bytes())


def test_the_mined_students_learning_rate_is_one_key():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        mined = compose("train", overrides=["experiment=medquad_mined", "distill.student_lr=1.0e-4"])
        distilled = compose("train", overrides=["experiment=medquad_distill"])
    assert "optim.lr=0.0001" in OmegaConf.to_container(mined.distill, resolve=True)["student"]
    assert "optim.lr=2e-05" in OmegaConf.to_container(distilled.distill, resolve=True)["student"]


def test_medquad_best_is_the_measured_sibling_recipe_and_keeps_its_best_checkpoint(tmp_path, tiny_data_dir,
                                                                                    tiny_model_dir):
    measured = ["data=medquad", "loss=mnr", "evaluation=[medquad,retrieval,stsb]", "backbone.max_seq_length=128",
                "save_model=best", "eval_every_n_steps=100", "optim.lr=1.0e-4", "data.batch_size=32",
                "data.group_by_length=false", "trainer.max_epochs=2", "backbone.dropout_masks=packed",
                "data.group_negatives={field: focus, share: 0.5}", "merge_with_start=0.3",
                # Measured before packed sequences existed: one padded forward pass per column.
                "backbone.sequence_packing=false"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        best = compose("train", overrides=["experiment=medquad_best"])
        command = compose("train", overrides=measured)
    # The experiment is the command the README's figures were measured with.
    assert OmegaConf.to_yaml(best) == OmegaConf.to_yaml(command)
    run_dir = tmp_path / "best"
    result = run_train("experiment=medquad_best", "precision=32-true", "evaluation=[medquad]", "eval_every_n_steps=2",
                       "trainer.max_steps=4", run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert {"dev/medquad/ndcg@10", "test/medquad-dev/ndcg@10"} <= results.keys()
    assert len(list((run_dir / "checkpoints").glob("epoch=*.ckpt"))) == 1
    assert (run_dir / "model" / "modules.json").exists()
    assert "test/medquad-dev" in json.loads((run_dir / "per_query.json").read_text())


def benchmark(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "scripts/benchmark.py", *overrides], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)


def tiny_suite(run_dir, data_dir, model_dir, *overrides: str) -> subprocess.CompletedProcess:
    """The retrieval suite on the tiny model and data, into `run_dir`."""
    return benchmark("suite=retrieval", f"model_path={model_dir}", f"paths.data_dir={data_dir}",
                     f"hydra.run.dir={run_dir}", "suite.rows=24", "suite.batch_size=8",
                     "suite.mining.relative_margin=null", *overrides)


def test_the_retrieval_benchmark_runs_both_sides_of_every_recipe(tmp_path, tiny_data_dir, tiny_model_dir):
    result = tiny_suite(tmp_path, tiny_data_dir, tiny_model_dir, "suite.precision=32-true",
                        f"suite.teacher={TINY_TEACHER}")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["suite/rows"] == 24
    for recipe in ("mnr", "mnr_mined", "mnr_siblings", "gist", "margin_mse"):
        for side in ("embedlab", "sentence_transformers"):
            assert f"{recipe}/{side}/dev/medquad/ndcg@10" in results
            assert results[f"{recipe}/{side}/train/samples_per_second"] > 0
            assert (tmp_path / recipe / side / "model" / "modules.json").exists()
            assert f"| {recipe} | {side} |" in result.stdout
        if recipe != "mnr":
            assert 0 <= results[f"significance/{recipe}_vs_mnr/embedlab/p_ttest"] <= 1
    assert "significance/best_embedlab_vs_best_sentence_transformers/p_ttest" in results
    # Each side mined its own hard negatives, with the same settings.
    for side in ("embedlab", "sentence_transformers"):
        assert len(read_rows(tmp_path / "mined" / f"{side}.jsonl")) == 24
    # Both sides trained mnr_siblings on one file: the suite's rows, each with a negative from another row.
    pairs = {(row["anchor"], row["positive"]) for row in read_rows(tmp_path / "mined" / "embedlab.jsonl")}
    siblings = read_rows(tmp_path / "siblings" / "rows.jsonl")
    assert {(row["anchor"], row["positive"]) for row in siblings} == pairs and len(siblings) == 24
    assert all(row["negative"] and row["negative"] != row["positive"] for row in siblings)


def test_the_retrieval_benchmark_runs_one_side_alone(tmp_path, tiny_data_dir, tiny_model_dir):
    result = tiny_suite(tmp_path, tiny_data_dir, tiny_model_dir, "suite.recipes=[mnr,mnr_mined]",
                        "suite.sides=[embedlab]", "suite.merge_with_start=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 <= results["significance/mnr_mined_vs_mnr/embedlab/p_ttest"] <= 1
    assert results["best/embedlab"] in ("mnr", "mnr_mined") and "best/sentence_transformers" not in results
    assert not any(key.startswith(("mnr/sentence_transformers", "mnr_mined/sentence_transformers")) for key in results)
    assert not (tmp_path / "mnr" / "sentence_transformers").exists()
    assert not (tmp_path / "mined" / "sentence_transformers.jsonl").exists()
    assert "| mnr_mined | embedlab |" in result.stdout and "sentence_transformers |" not in result.stdout
    # suite.precision=auto is resolved once, and the stages train in what it chose.
    chosen = resolve_precision("auto", "cpu")
    assert results["suite/precision"] == chosen
    stage_config = OmegaConf.load(tmp_path / "mnr" / "embedlab" / "config.yaml")
    assert stage_config.precision == chosen and stage_config.merge_with_start == 0.5

    # Resumed with the other side added, the suite reuses embedlab's stages and trains only sentence-transformers'.
    both = benchmark(f"resume={tmp_path}", "suite.recipes=[mnr]", "suite.sides=[embedlab,sentence_transformers]")
    assert both.returncode == 0, both.stderr[-3000:]
    assert "stage mnr/embedlab: done before" in both.stdout + both.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "mnr" / "sentence_transformers" / "model" / "modules.json").exists()
    assert "significance/best_embedlab_vs_best_sentence_transformers/p_ttest" in results

    unknown = tiny_suite(tmp_path / "misspelt", tiny_data_dir, tiny_model_dir, "suite.sides=[embedlab,st]")
    assert unknown.returncode != 0
    assert "suite.sides: unknown ['st']; known: embedlab, sentence_transformers" in unknown.stderr
