"""The written results and the comparison report: results.json/results.md, comparison.md and the PNG plots."""

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image
from scipy.stats import ttest_rel, wilcoxon

from embedlab.evaluation.report import load_run, results_markdown, write_results

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "report.py"


def report_main(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("report_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.report_errors(lambda: module.report(argv))


def test_results_json_and_markdown(tmp_path):
    results = {"test/stsb/spearman_cosine": 0.82031, "latency/p95_ms@1": 12.5, "latency/device": "cpu",
               "model/path": "/models/a|b"}
    write_results(tmp_path, results, {"test/rqe": {"positive": [0.5], "negative": [0.1]}})
    assert json.loads((tmp_path / "results.json").read_text()) == results
    markdown = (tmp_path / "results.md").read_text()
    assert markdown == results_markdown(results)
    assert "## test/stsb\n\n| metric | value |\n|---|---|\n| spearman_cosine | 0.8203 |" in markdown
    assert "| device | cpu |" in markdown and "| path | /models/a\\|b |" in markdown
    assert json.loads((tmp_path / "similarities.json").read_text())["test/rqe"]["negative"] == [0.1]


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, Path]:
    # A training run (results.json beside model/, a CSV log) and an evaluation of that trained model.
    training = tmp_path / "train_run"
    (training / "model").mkdir(parents=True)
    (training / "csv").mkdir()
    (training / "results.json").write_text(json.dumps({"test/stsb/spearman_cosine": 0.80}))
    (training / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,dev/stsb/spearman_cosine\n0,49,1.5,\n0,99,1.1,\n0,99,,0.78\n0,149,0.9,\n0,199,,0.81\n")
    evaluation = tmp_path / "eval_run"
    write_results(evaluation, {"test/stsb/spearman_cosine": 0.81, "latency/sentences_per_second@32": 150.0,
                               "model/path": str(training / "model")},
                  {"test/rqe": {"positive": [0.7, 0.8, 0.6], "negative": [0.1, 0.3]}})
    baseline = tmp_path / "baseline_eval"
    write_results(baseline, {"test/stsb/spearman_cosine": 0.8203, "latency/sentences_per_second@32": 180.0,
                             "model/path": "/site-packages/all-MiniLM-L6-v2"})
    return training / "model", evaluation, baseline


def test_report_writes_the_table_and_plots(two_runs, tmp_path):
    model_folder, evaluation, baseline = two_runs
    out = tmp_path / "report"
    assert report_main([str(evaluation), str(baseline), str(model_folder), "--out", str(out)]) == 0
    table = (out / "comparison.md").read_text()
    # Training and evaluation spell their keys alike, so one column holds both.
    assert "| model | test/stsb/spearman_cosine | latency/sentences_per_second@32 |" in table
    assert "| train_run/model | 0.8100 | 150.0 |" in table
    assert "| site-packages/all-MiniLM-L6-v2 | 0.8203 | 180.0 |" in table
    assert "| train_run | 0.8000 | – |" in table
    # Sizes follow from the figure sizes at 120 dpi: 7x5 in; 8 in wide, 3 in per panel.
    expected = {"quality_vs_throughput.png": (840, 600), "training_curves.png": (960, 720),
                "similarity_distribution.png": (960, 360)}
    for name, size in expected.items():
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size == size, name
            assert len(set(image.convert("L").getdata())) > 10, f"{name} is blank"


def test_model_folder_finds_its_run_and_training_log(two_runs):
    model_folder, evaluation, _ = two_runs
    training = load_run(model_folder)
    assert training.results == {"test/stsb/spearman_cosine": 0.80}
    assert training.training_log == model_folder.parent / "csv" / "metrics.csv"
    # The evaluation of the trained model finds the same log through model/path.
    assert load_run(evaluation).training_log == training.training_log
    assert load_run(evaluation).label == "train_run/model"


def test_report_on_a_folder_without_results_fails_in_one_line(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"embedlab: error: no results.json in {tmp_path} or its parent"


def test_a_pipeline_run_becomes_one_row_per_stage(tmp_path):
    pipeline = tmp_path / "tsdae_biomed"
    write_results(pipeline, {"base/test/biosses/spearman_cosine": 0.8164, "base/test/stsb/spearman_cosine": 0.8203,
                             "tsdae/test/biosses/spearman_cosine": 0.5, "tsdae/train/samples_per_second": 9.0,
                             "teacher/dev/stsb/spearman": 0.8})
    training = tmp_path / "stsb_cosine"
    write_results(training, {"test/stsb/spearman_cosine": 0.848, "train/samples_per_second": 25.0})
    out = tmp_path / "report"
    assert report_main([str(pipeline), str(training), "--out", str(out)]) == 0
    table = (out / "comparison.md").read_text().splitlines()
    assert table[2] == ("| model | test/stsb/spearman_cosine | test/biosses/spearman_cosine "
                        "| train/samples_per_second |")
    assert table[4:] == ["| tsdae_biomed/base | 0.8203 | 0.8164 | – |",
                         "| tsdae_biomed/tsdae | – | 0.5000 | 9.0000 |",
                         "| stsb_cosine | 0.8480 | – | 25.0000 |"]
    assert (out / "quality_vs_throughput.png").exists()


def test_the_report_tests_each_model_against_the_first_on_the_queries_both_scored(tmp_path):
    base = {"test/liveqa-med": {"ndcg@10": {"q1": 0.2, "q2": 0.5, "q3": 0.1, "q4": 0.9, "q5": 0.4}},
            "test/medquad-dev": {"ndcg@10": {"a": 0.3, "b": 0.6}}}
    tuned = {"test/liveqa-med": {"ndcg@10": {"q1": 0.6, "q2": 0.4, "q3": 0.8, "q4": 1.0, "q5": 0.7, "q6": 1.0}}}
    runs = {"base": base, "tuned": tuned, "no_per_query": None}
    for name, per_query in runs.items():
        write_results(tmp_path / name, {"test/liveqa-med/ndcg@10": 0.5}, per_query=per_query)
    out = tmp_path / "report"
    assert report_main([*(str(tmp_path / name) for name in runs), "--out", str(out)]) == 0
    section = (out / "comparison.md").read_text().split("## Paired tests against the first model, per query\n\n")[1]
    shared = ["q1", "q2", "q3", "q4", "q5"]
    first = [tuned["test/liveqa-med"]["ndcg@10"][q] for q in shared]
    second = [base["test/liveqa-med"]["ndcg@10"][q] for q in shared]
    # One row: the only retrieval set both scored, on its five shared queries; the run without figures has none.
    assert section.splitlines()[2:] == [
        (f"| tuned | base | test/liveqa-med | {sum(first) / 5 - sum(second) / 5:.4f} "
         f"| {ttest_rel(first, second).pvalue:.3g} | {wilcoxon(first, second).pvalue:.3g} | 5 |")]
