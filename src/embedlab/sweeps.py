"""Sweeps over training runs: the Optuna study's bookkeeping and pruning, and the summary written when a multirun
ends.

`python train.py -m hparams_search=optuna ...` and plain grids (`-m loss=mnr,cosent optim.lr=1e-5,3e-5`) run
each job in its own folder `<sweep dir>/<job number>`; at the end `SweepSummary` writes summary.csv, summary.md
and summary.png beside them, one row per job. The sweeper itself is hydra_plugins.embedlab_optuna, where Hydra
requires its plugins to live.
"""

import contextlib
import csv
import json
import logging
import math
import os
from pathlib import Path

import lightning as L
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig

from embedlab.evaluation.report import markdown_table
from embedlab.run_folder import RESULTS_FILE

log = logging.getLogger(__name__)
SUMMARY_CSV = "summary.csv"
SUMMARY_MARKDOWN = "summary.md"
SUMMARY_PLOT = "summary.png"


def mark_cut_off_trials_failed(study) -> int:
    """Mark as failed the trials a killed sweep left running; returns the trials done (complete or pruned)."""
    from optuna.trial import TrialState

    for trial in study.trials:
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
    return sum(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in study.trials)


# The Optuna trials whose jobs the sweeper is launching in this process, by job number (which is the trial number).
_TRIALS: dict[int, object] = {}


@contextlib.contextmanager
def trials_in_flight(trials: list):
    """While inside, OptunaPruning in each trial's job (run in this process by the launcher) reports to its trial."""
    _TRIALS.update({trial.number: trial for trial in trials})
    try:
        yield
    finally:
        for trial in trials:
            _TRIALS.pop(trial.number, None)


class OptunaPruning(L.Callback):
    """Reports `monitor` to the job's Optuna trial after each dev evaluation of the fit, at its optimiser step, and
    stops the run (optuna.TrialPruned, recorded as pruned) when the study's pruner gives up on the trial. Outside
    an Optuna sweep it does nothing. A run at its last step is never pruned: it finished, and counts as complete."""

    def __init__(self, monitor: str):
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trial = _running_trial()
        value = trainer.callback_metrics.get(self.monitor)
        if trial is None or value is None or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        trial.report(float(value), step=trainer.global_step)
        if not trainer.should_stop and trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"{self.monitor} {float(value):.4f} at step {trainer.global_step}")


def _running_trial():
    return _TRIALS.get(HydraConfig.get().job.num) if HydraConfig.initialized() else None


class SweepSummary(Callback):
    """Hydra callback: W&B groups the runs of one multirun under the sweep folder's name, and a table and a
    plot of every job's results (results.json) against its overrides are written when the multirun ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        os.environ.setdefault("WANDB_RUN_GROUP", str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sweep_jobs(sweep_dir)
        if not jobs:
            return
        metric = config.get("optimized_metric")
        varying, metrics, rows = summary_rows(jobs, metric)
        columns = ["job", *varying, *metrics]
        with (sweep_dir / SUMMARY_CSV).open("w", newline="") as handle:
            csv.writer(handle).writerows([columns, *rows])
        (sweep_dir / SUMMARY_MARKDOWN).write_text(f"# Sweep {sweep_dir}\n\n" + markdown_table(columns, rows))
        plot_metric = metric or next((key for key in metrics if key.startswith("dev/")), None)
        if plot_metric in metrics:
            labels = [f"{row[0]}: " + " ".join(f"{key}={value}" for key, value in zip(varying, row[1:]))
                      for row in rows]
            plot_sweep(labels, [row[columns.index(plot_metric)] for row in rows], plot_metric,
                       sweep_dir / SUMMARY_PLOT)
        log.info("sweep summary of %d jobs: %s", len(rows), sweep_dir / SUMMARY_MARKDOWN)


def sweep_jobs(sweep_dir: Path) -> list[tuple[str, dict[str, str], dict]]:
    """(job folder name, its overrides, its results or {} when it did not finish) in job order."""
    jobs = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        overrides = dict(override.split("=", 1) for override in yaml.safe_load(overrides_file.read_text()) or [])
        results_file = job_dir / RESULTS_FILE
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        jobs.append((job_dir.name, overrides, results))
    return sorted(jobs, key=lambda job: (not job[0].isdigit(), int(job[0]) if job[0].isdigit() else 0, job[0]))


def summary_rows(jobs: list[tuple[str, dict, dict]], metric: str | None) -> tuple[list[str], list[str], list[list]]:
    """The override keys that differ between jobs (all of them for a single job), the result keys (the optimised
    metric first), and one row per job: its name, its value of each override key, then of each result key."""
    keys = list(dict.fromkeys(key for _, overrides, _ in jobs for key in overrides))
    varying = [key for key in keys if len({overrides.get(key) for _, overrides, _ in jobs}) > 1] or keys
    results = sorted({key for _, _, result in jobs for key in result} - {metric})
    metrics = ([metric] if metric else []) + results
    rows = [[name, *(overrides.get(key) for key in varying), *(result.get(key) for key in metrics)]
            for name, overrides, result in jobs]
    return varying, metrics, rows


def plot_sweep(labels: list[str], values: list, metric: str, path: Path) -> Path:
    """One bar per job, its `metric` (none for a job without results)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 1.5 + 0.4 * len(labels)))
    axes.barh(labels, [value if isinstance(value, (int, float)) else math.nan for value in values])
    axes.invert_yaxis()
    axes.set_xlabel(metric)
    axes.set_title("Sweep")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
