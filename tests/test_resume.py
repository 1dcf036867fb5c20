"""Seeded runs repeat bit for bit, and a run stopped by SIGINT or SIGTERM resumes, by the command it prints, to the
uninterrupted result: the same job, the same weights and figures, one complete metrics log."""

import json
import os
import shlex
import signal
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from cli import assert_one_line_error, run_command, run_here, run_train, train_here
from safetensors.torch import load_file

from embedlab.train import main

TESTS_DIR = Path(__file__).resolve().parent
# Batches of 8, dev every 2 steps. 48 STSB rows, or 48 corpus sentences for TSDAE: 6 steps an epoch, 12 in all. The
# mixture of 45 MedQuAD pairs (the training side of its dev split) and 72 NLI triplets: 6 + 9 steps an epoch, 30.
COMMON = ("data.batch_size=8", "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "seed=7")
RUNS = {"stsb_cosine": ("experiment=stsb_cosine", *COMMON),
        "tsdae": ("model=tsdae", "data=corpus", "pooling=cls", "data.min_words=1", *COMMON),
        "mixture": ("data=medquad_nli", *COMMON)}
STEPS = {"stsb_cosine": 12, "tsdae": 12, "mixture": 30}
RUN = RUNS["stsb_cosine"]
# Mid-epoch (the second epoch's third step), where a resume must skip the batches already trained on.
INTERRUPT_AT_STEP = 9


class SignalAtStep(L.Callback):
    """Test only: the training process sends itself `signal_name` once `step` optimiser steps are done."""

    def __init__(self, step: int, signal_name: str):
        self.step = step
        self.signal = signal.Signals[signal_name]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


def train_losses(run_dir: Path) -> list[str]:
    """The logged training loss of each step, as written (so equal means bit-identical)."""
    lines = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("train/loss")
    return [line.split(",")[column] for line in lines[1:] if line.split(",")[column]]


def assert_same_weights(first_dir: Path, second_dir: Path) -> None:
    first, second = (load_file(run_dir / "model" / "model.safetensors") for run_dir in (first_dir, second_dir))
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].equal(second[name]), name


@pytest.fixture(scope="module")
def paths(tiny_data_dir, tiny_model_dir) -> dict:
    return {"data_dir": tiny_data_dir, "backbone": tiny_model_dir}


def uninterrupted_run(tmp_path_factory, paths, name: str) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_train(*RUNS[name], run_dir=run_dir, **paths)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(train_losses(run_dir)) == STEPS[name]
    return run_dir


@pytest.fixture
def signal_callback_importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))


def interrupt(run_dir: Path, signal_name: str, paths: dict, run: tuple[str, ...] = RUN, env=None) -> str:
    """Run `run` into `run_dir`, stopped by `signal_name` at INTERRUPT_AT_STEP; returns the printed resume command."""
    interrupting = ["+callbacks.interrupt._target_=test_resume.SignalAtStep",
                    f"+callbacks.interrupt.step={INTERRUPT_AT_STEP}", f"+callbacks.interrupt.signal_name={signal_name}"]
    result = run_train(*run, *interrupting, run_dir=run_dir, **paths, env=env)
    assert_one_line_error(result, f"training interrupted at step {INTERRUPT_AT_STEP}; resume with: python train.py "
                                  f"resume={run_dir}")
    # The checkpoint is saved whole on purpose: Lightning's "weights_only was not set" would only confuse.
    assert "weights_only" not in result.stdout + result.stderr
    assert not (run_dir / "model").exists() and not (run_dir / "results.json").exists()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == INTERRUPT_AT_STEP
    return result.stderr.strip().splitlines()[-1].split("resume with: ", 1)[1]


def resume_as_printed(command: str, env=None):
    """The printed command, run as a user would paste it: nothing else on its command line."""
    resumed = run_command([sys.executable, *shlex.split(command)[1:]], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The resume is exact (the sampler skips what the epoch trained on): Lightning's warning that it is not is false.
    assert "not resumable" not in resumed.stdout + resumed.stderr
    return resumed


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_sigterm_then_the_printed_resume_gives_the_uninterrupted_result(name, tmp_path, tmp_path_factory, paths,
                                                                        signal_callback_importable):
    run = RUNS[name]
    uninterrupted = uninterrupted_run(tmp_path_factory, paths, name)
    run_dir = tmp_path / "interrupted"
    command = interrupt(run_dir, "SIGTERM", paths, run)
    # The same seed: the steps before the interruption are bit-identical to the uninterrupted run's.
    assert train_losses(run_dir) == train_losses(uninterrupted)[:INTERRUPT_AT_STEP]

    resume_as_printed(command)
    # The resumed run is the interrupted job (its overrides restored), and trains the second epoch's remaining
    # batches in the uninterrupted run's order: its log holds every step once, its weights and figures are the
    # uninterrupted run's.
    assert train_losses(run_dir) == train_losses(uninterrupted)
    expected = json.loads((uninterrupted / "results.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("dev/stsb/spearman_cosine", "dev/stsb/pearson_cosine", "test/stsb/pearson_cosine"):
        assert results[key] == expected[key], key
    assert_same_weights(uninterrupted, run_dir)


@pytest.mark.slow
def test_sigint_also_stops_at_a_step_boundary_with_a_checkpoint(tmp_path, paths, signal_callback_importable):
    interrupt(tmp_path / "interrupted", "SIGINT", paths)


@pytest.mark.slow
def test_a_resume_restores_the_data_folder_the_run_resolved(tmp_path, paths, signal_callback_importable):
    # The interrupted run found its data through EMBEDLAB_DATA_DIR, which the shell of the resume no longer sets.
    run = [f"backbone.name_or_path={paths['backbone']}", "data.max_rows=40", *RUN]
    run_dir = tmp_path / "interrupted"
    interrupting = ["+callbacks.interrupt._target_=test_resume.SignalAtStep", "+callbacks.interrupt.step=3",
                    "+callbacks.interrupt.signal_name=SIGTERM"]
    stopped = run_command([sys.executable, "train.py", *run, *interrupting, f"hydra.run.dir={run_dir}"],
                          env={"EMBEDLAB_DATA_DIR": str(paths["data_dir"])})
    assert "training interrupted at step 3" in stopped.stderr, stopped.stderr[-3000:]
    resume_as_printed(f"python train.py resume={run_dir}", env={"EMBEDLAB_DATA_DIR": None})
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["paths"]["data_dir"] == str(paths["data_dir"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["max_rows"] == 40


def test_a_resume_that_would_change_the_run_is_refused_and_changes_nothing(tmp_path, paths, capfd, monkeypatch):
    run_dir = tmp_path / "run"
    finished = train_here(capfd, monkeypatch, *RUN, "trainer.max_steps=2", run_dir=run_dir, **paths)
    assert finished.returncode == 0, finished.stderr[-3000:]
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != ".lock"}
    refused = run_here(main, ["train.py", f"resume={run_dir}", "data.max_rows=10"], capfd, monkeypatch)
    assert_one_line_error(refused, f"resume={run_dir}: data.max_rows would be 10, but the run was started with None; "
                                   "a resume may change only trainer.max_steps, trainer.max_epochs")
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != ".lock"} == before
    # What may change does: the finished run goes on to more steps, in the same folder and log.
    longer = run_here(main, ["train.py", f"resume={run_dir}", "trainer.max_steps=4"], capfd, monkeypatch)
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert len(train_losses(run_dir)) == 4


def test_another_seed_trains_differently(tmp_path, paths, capfd, monkeypatch):
    first, other = tmp_path / "first", tmp_path / "other"
    for run_dir, seed in ((first, "seed=7"), (other, "seed=8")):
        result = train_here(capfd, monkeypatch, *RUN, seed, "trainer.max_steps=2", run_dir=run_dir, **paths)
        assert result.returncode == 0, result.stderr[-3000:]
    assert train_losses(other) != train_losses(first)


def test_resuming_without_a_checkpoint_is_a_one_line_error(tmp_path, paths, capfd, monkeypatch):
    run_dir = tmp_path / "fresh"
    result = train_here(capfd, monkeypatch, "experiment=stsb_cosine", "ckpt_path=last", run_dir=run_dir, **paths)
    assert_one_line_error(result, f"ckpt_path=last: no checkpoint at {run_dir / 'checkpoints' / 'last.ckpt'} "
                                  "(resume=<run folder> resumes an interrupted run in its own folder)")
    assert_one_line_error(run_here(main, ["train.py", f"resume={tmp_path / 'none'}"], capfd, monkeypatch),
                          f"resume={tmp_path / 'none'}: no run to resume there (no .hydra/overrides.yaml)")
