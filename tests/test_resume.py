"""Seeded runs repeat bit for bit, and a run stopped by SIGINT or SIGTERM resumes to the uninterrupted result."""

import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from cli import assert_one_line_error, run_train
from safetensors.torch import load_file

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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, paths) -> Path:
    return uninterrupted_run(tmp_path_factory, paths, "stsb_cosine")


@pytest.fixture
def signal_callback_importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))


def interrupt(run_dir: Path, signal_name: str, paths: dict, run: tuple[str, ...] = RUN):
    interrupting = ["+callbacks.interrupt._target_=test_resume.SignalAtStep",
                    f"+callbacks.interrupt.step={INTERRUPT_AT_STEP}", f"+callbacks.interrupt.signal_name={signal_name}"]
    result = run_train(*run, *interrupting, run_dir=run_dir, **paths)
    assert_one_line_error(result, f"training interrupted at step {INTERRUPT_AT_STEP}; resume with ckpt_path=last "
                                  f"hydra.run.dir={run_dir}")
    assert not (run_dir / "model").exists() and not (run_dir / "results.json").exists()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == INTERRUPT_AT_STEP


@pytest.mark.parametrize("name", list(RUNS))
def test_sigterm_then_resume_gives_the_uninterrupted_result(name, tmp_path, tmp_path_factory, paths,
                                                           signal_callback_importable):
    run = RUNS[name]
    uninterrupted = uninterrupted_run(tmp_path_factory, paths, name)
    run_dir = tmp_path / "interrupted"
    interrupt(run_dir, "SIGTERM", paths, run)
    # The same seed: the steps before the interruption are bit-identical to the uninterrupted run's.
    assert train_losses(run_dir) == train_losses(uninterrupted)[:INTERRUPT_AT_STEP]

    resumed = run_train(*run, "ckpt_path=last", run_dir=run_dir, **paths)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The resumed run trains the second epoch's remaining batches in the uninterrupted run's order: the losses
    # of those steps, and so the weights and figures, are the uninterrupted run's.
    remaining = len(train_losses(uninterrupted)) - INTERRUPT_AT_STEP
    assert train_losses(run_dir)[-remaining:] == train_losses(uninterrupted)[INTERRUPT_AT_STEP:]
    expected = json.loads((uninterrupted / "results.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("dev/stsb/spearman_cosine", "dev/stsb/pearson_cosine", "test/stsb/pearson_cosine"):
        assert results[key] == expected[key], key
    assert_same_weights(uninterrupted, run_dir)


def test_sigint_also_stops_at_a_step_boundary_with_a_checkpoint(tmp_path, paths, signal_callback_importable):
    interrupt(tmp_path / "interrupted", "SIGINT", paths)


def test_another_seed_trains_differently(tmp_path, paths, uninterrupted):
    other = run_train(*RUN, "seed=8", "trainer.max_steps=2", run_dir=tmp_path / "other", **paths)
    assert other.returncode == 0, other.stderr[-3000:]
    assert train_losses(tmp_path / "other") != train_losses(uninterrupted)[:2]


def test_resuming_without_a_checkpoint_is_a_one_line_error(tmp_path, paths):
    run_dir = tmp_path / "fresh"
    result = run_train("experiment=stsb_cosine", "ckpt_path=last", run_dir=run_dir, **paths)
    assert_one_line_error(result, f"ckpt_path=last: no checkpoint at {run_dir / 'checkpoints' / 'last.ckpt'}")
