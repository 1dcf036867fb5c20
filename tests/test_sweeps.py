"""Sweeps: a resumable Optuna study of tiny runs with pruning, plain grids, and the summary written at the end."""

import csv
import json
import os
from pathlib import Path

import optuna
import pytest
from cli import run_train
from optuna.trial import TrialState

from embedlab.sweeps import mark_cut_off_trials_failed

TESTS_DIR = Path(__file__).resolve().parent

METRIC = "dev/stsb/spearman_cosine"
# A fixed override wins over the search space: the batch size stays 8, the learning rate and warmup are searched.
TINY_RUN = ("experiment=stsb_cosine", "data.batch_size=8", "trainer.max_steps=2")


def sweep(sweep_dir, *overrides, data_dir, backbone):
    return run_train("hydra.mode=MULTIRUN", *TINY_RUN, f"hydra.sweep.dir={sweep_dir}", *overrides, run_dir=sweep_dir / "unused",
                     data_dir=data_dir, backbone=backbone)


def summary(sweep_dir) -> list[dict]:
    with (sweep_dir / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_optuna_sweep_writes_one_folder_per_trial_and_resumes(tmp_path, tiny_data_dir, tiny_model_dir):
    sweep_dir = tmp_path / "sweep"
    paths = {"data_dir": tiny_data_dir, "backbone": tiny_model_dir}
    first = sweep(sweep_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=2", **paths)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = summary(sweep_dir)
    assert [row["job"] for row in rows] == ["0", "1"]
    for row in rows:
        results = json.loads((sweep_dir / row["job"] / "results.json").read_text())
        assert float(row[METRIC]) == results[METRIC]
        assert 1e-5 <= float(row["optim.lr"]) <= 1e-4 and 0 <= float(row["optim.warmup_ratio"]) <= 0.2
    assert rows[0]["optim.lr"] != rows[1]["optim.lr"]
    table = (sweep_dir / "summary.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table if line.startswith("| ")] == ["| job", "| 0", "| 1"]
    assert (sweep_dir / "summary.png").is_file()
    first_job_results = (sweep_dir / "0" / "results.json").read_text()

    # The same command over the same folder with a bigger study runs only the missing trial, in a new folder.
    resumed = sweep(sweep_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=3", **paths)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming study embedlab: 2 of 3 trials done" in resumed.stdout + resumed.stderr
    assert [row["job"] for row in summary(sweep_dir)] == ["0", "1", "2"]
    assert (sweep_dir / "0" / "results.json").read_text() == first_job_results
    study = optuna.load_study(study_name="embedlab", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3
    assert study.best_value == max(float(row[METRIC]) for row in summary(sweep_dir))


@pytest.mark.slow
def test_plain_grid_sweep_summarises_each_combination_and_groups_its_wandb_runs(tmp_path, tiny_data_dir,
                                                                               tiny_model_dir):
    sweep_dir = tmp_path / "grid"
    result = sweep(sweep_dir, "loss=cosine,cosent", "optimized_metric=" + METRIC, "trainer.max_steps=2",
                   "logger=wandb", "callbacks.wandb_dashboard.log_model_artifact=false",
                   data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary(sweep_dir)
    assert [(row["job"], row["loss"]) for row in rows] == [("0", "cosine"), ("1", "cosent")]
    assert all(row[METRIC] for row in rows) and (sweep_dir / "summary.png").is_file()
    for job in ("0", "1"):
        (run_file,) = (sweep_dir / job).glob("wandb/offline-run-*/run-*.wandb")
        records = run_file.read_bytes()
        assert str(sweep_dir).encode() in records  # the W&B group
        assert b"dev/stsb/cosine/positive" in records and b"model.safetensors" not in records


class PruneFromTheSecondTrial(optuna.pruners.BasePruner):
    """Test only: every trial but the first is pruned at its first report."""

    def __init__(self, **settings):
        self.settings = settings

    def prune(self, study, trial) -> bool:
        return trial.number >= 1


@pytest.mark.slow
def test_a_pruned_trial_stops_early_and_is_recorded_as_pruned(tmp_path, tiny_data_dir, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    sweep_dir = tmp_path / "sweep"
    # Four steps, dev every two: the second trial reports at step 2 and is pruned there.
    result = sweep(sweep_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.max_steps=4",
                   "hydra.sweeper.pruner._target_=test_sweeps.PruneFromTheSecondTrial", data_dir=tiny_data_dir,
                   backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="embedlab", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert list(study.trials[1].intermediate_values) == [2]
    assert "trial 1 pruned: dev/stsb/spearman_cosine" in result.stdout + result.stderr
    assert (sweep_dir / "0" / "results.json").is_file() and not (sweep_dir / "1" / "results.json").exists()
    assert [row["job"] for row in summary(sweep_dir)] == ["0", "1"]


def test_a_trial_cut_off_mid_run_is_marked_failed_and_not_counted(tmp_path):
    study = optuna.create_study(study_name="cut", storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # its process died: the trial stays RUNNING in the storage
    assert mark_cut_off_trials_failed(study) == 1
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "FAIL"]
