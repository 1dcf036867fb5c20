"""Every entry point turns a configuration or data error into one `embedlab: error:` line, also when Hydra's
instantiate wrapped it, and none writes a config with a secret in it.

Each script runs as `python <script>` would run it (its own `__main__`), in the test's process: the errors come
before any training, so a process of its own would mostly import torch again.
"""

import runpy

import pytest
from cli import ROOT, assert_one_line_error, run_here

SECRET = "hf_entrypoint_secret_value_1234"


@pytest.fixture
def run_script(capfd, monkeypatch):
    """`run_script(script, *arguments)`: the script's exit status and output, with a secret in the environment."""
    monkeypatch.setenv("HF_TOKEN", SECRET)

    def run(script: str, *arguments: str):
        return run_here(lambda: runpy.run_path(str(ROOT / script), run_name="__main__"), [script, *arguments],
                        capfd, monkeypatch)
    return run


def hydra_cases(model: str, data_dir, run_dir) -> dict:
    """(arguments, the error's text) of a config error that Hydra's instantiate wraps, per Hydra entry point."""
    common = [f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}", "+notes=${oc.env:HF_TOKEN}"]
    return {
        "train.py": ([f"backbone.name_or_path={model}", "data=stsb", "loss=cosine", "data.batch_size=0", *common],
                     "data.batch_size must be at least 1, got 0"),
        "scripts/augmented_sbert.py": (["experiment=augsbert_stsb", f"backbone.name_or_path={model}",
                                        ('augsbert.teacher=["model=cross_encoder","loss=bce","data.batch_size=0",'
                                        '"evaluation=[stsb_cross_encoder]"]'), *common],
                                       "data.batch_size must be at least 1, got 0"),
        "scripts/domain_adapt.py": (["experiment=tsdae_biomed", f"backbone.name_or_path={model}",
                                     "+domain_adapt.evaluation.stsb_test.measures=[cosin]", *common],
                                    "STS measures must be some of"),
        "scripts/evaluate.py": ([f"model_path={model}", "evaluation=stsb", "evaluation.stsb_test.measures=[cosin]",
                                 *common], "STS measures must be some of"),
        "scripts/benchmark.py": ([f"model_path={model}", "jobs=[train_stsb_cosine]", "train.batch_size=0", *common],
                                 "data.batch_size must be at least 1, got 0"),
        "scripts/mine_hard_negatives.py": ([f"model_path={model}", "data.batch_size=0", *common],
                                           "data.batch_size must be at least 1, got 0"),
    }


@pytest.mark.parametrize("script", ["train.py", "scripts/augmented_sbert.py", "scripts/domain_adapt.py",
                                    "scripts/evaluate.py", "scripts/benchmark.py", "scripts/mine_hard_negatives.py"])
def test_hydra_entry_points_report_a_wrapped_config_error_in_one_line(script, tmp_path, tiny_data_dir,
                                                                      tiny_model_dir, run_script):
    run_dir = tmp_path / "run"
    arguments, expected = hydra_cases(tiny_model_dir, tiny_data_dir, run_dir)[script]
    result = run_script(script, *arguments)
    assert_one_line_error(result, expected)
    # The config is saved before the error, with the secret the environment held replaced.
    saved = (run_dir / "config.yaml").read_text()
    assert "notes: <redacted>" in saved
    assert not [path for path in run_dir.rglob("*") if path.is_file() and SECRET.encode() in path.read_bytes()]


@pytest.mark.parametrize("script, arguments, expected", [
    ("scripts/report.py", ["{empty}"], "no results.json in"),
    ("scripts/check_throughput.py", ["repeats=0"], "repeats, train.steps and train.warmup_steps must be at least 1"),
    ("scripts/reinit_top_layers.py", ["--model", "{model}", "--layers", "9", "--output", "{empty}/out"],
     "--layers must be between 1 and 2, got 9"),
    ("scripts/gradcache_memory.py", ["--data-dir", "{empty}"], "no STSB train file at"),
    ("scripts/synthesize_corpus.py", ["--data-dir", "{empty}", "--out", "{empty}/out"], "no stsbenchmark/sts-test.csv"),
])
def test_plain_argument_entry_points_report_errors_in_one_line(script, arguments, expected, tmp_path,
                                                               tiny_model_dir, run_script):
    filled = [argument.format(empty=tmp_path, model=tiny_model_dir) for argument in arguments]
    assert_one_line_error(run_script(script, *filled), expected)
