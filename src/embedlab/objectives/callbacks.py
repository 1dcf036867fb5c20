"""Lightning callbacks of the training run."""

import datetime
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from embedlab.evaluation.callback import EvaluationCallback
from embedlab.evaluation.runner import peak_rss_mb

log = logging.getLogger(__name__)


class ThroughputMeter(L.Callback):
    """Training samples per second and seconds per step over the whole fit, all processes together, evaluation time
    excluded; and the peak memory of the fit (this process's resident memory, and the GPU's allocations on one)."""

    def __init__(self):
        self.samples = 0
        self.steps = 0
        self.elapsed = 0.0
        self.peak_memory_mb: dict[str, float] = {}
        self._started = None
        self._evaluating_since = None
        self._evaluation_time = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.elapsed if self.elapsed else 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    @property
    def seconds_per_step(self) -> float:
        return self.elapsed / self.steps if self.steps else 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += batch["size"] * trainer.world_size
        self.steps += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        self._evaluating_since = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._evaluating_since is not None:
            self._evaluation_time += time.perf_counter() - self._evaluating_since
            self._evaluating_since = None

    def on_train_end(self, trainer, pl_module) -> None:
        self.elapsed = time.perf_counter() - self._started - self._evaluation_time
        self.peak_memory_mb["train/peak_rss_mb"] = round(peak_rss_mb())
        if pl_module.device.type == "cuda":
            self.peak_memory_mb["train/peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)


class InterruptCheckpoint(L.Callback):
    """SIGINT or SIGTERM during fit: finish the step in progress, save `path`, stop; `ckpt_path=last` resumes there.

    Lightning already stops at a step boundary on SIGTERM; SIGINT is routed the same way, since a KeyboardInterrupt
    in the middle of an optimiser step would leave a checkpoint no uninterrupted run ever passes through. Every
    checkpoint also carries the random generators' state, so a resumed run draws the dropout masks the
    uninterrupted run would have drawn.
    """

    def __init__(self, path: str):
        self.path = path
        self._previous_sigint_handler = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint_handler = signal.signal(signal.SIGINT, _forward_as_sigterm)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous_sigint_handler is not None:
            signal.signal(signal.SIGINT, self._previous_sigint_handler)
            self._previous_sigint_handler = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            # The whole training state (optimiser, loops, generators), not the weights alone: it is resumed from.
            trainer.save_checkpoint(self.path, weights_only=False)
            rank_zero_info(f"interrupted at step {trainer.global_step}: saved {self.path}")

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _forward_as_sigterm(signum, frame) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class EvaluateAtEnd(L.Callback):
    """The dev evaluators also run after the last optimiser step, however the steps divide by
    eval_every_n_steps: the last and the best checkpoint exist at the end of every run, also a short one."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning evaluates when a fit is asked to stop, before it stops.
        if _is_last_step(trainer):
            trainer.should_stop = True


def _is_last_step(trainer) -> bool:
    if 0 < trainer.max_steps <= trainer.global_step:
        return True
    final_epoch = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - 1
    return final_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def progress_display(every_n_steps: int) -> ProgressBar:
    """On a terminal a bar; in a log file or a pipe, where a bar shows nothing until the end, a line every
    `every_n_steps` optimiser steps. Both count to trainer.max_steps when it ends the run first."""
    return StepsProgressBar() if sys.stdout.isatty() else ProgressLines(every_n_steps)


def batches_this_epoch(trainer) -> int | float:
    """The batches this epoch will train: all of the loader's, or fewer when trainer.max_steps stops it first."""
    batches = trainer.num_training_batches
    if trainer.max_steps <= 0:
        return batches
    before = trainer.current_epoch * batches if math.isfinite(batches) else 0
    return min(batches, trainer.max_steps * trainer.accumulate_grad_batches - before)


class StepsProgressBar(RichProgressBar):
    """Lightning's bar, counting to max_steps also when max_epochs is set (Lightning then counts whole epochs)."""

    @property
    def total_train_batches(self) -> int | float:
        return batches_this_epoch(self.trainer)


class ProgressLines(ProgressBar):
    """A plain line of progress every N optimiser steps and at the last: step, share done, speed, time left and the
    progress-bar metrics (the training loss, the dev metric)."""

    def __init__(self, every_n_steps: int):
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._started: tuple[float, int] | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        if not self._enabled or not trainer.is_global_zero or (step % self.every_n_steps and step != total):
            return
        started, first_step = self._started
        rate = (step - first_step) / max(time.perf_counter() - started, 1e-9)
        left = f", {datetime.timedelta(seconds=round((total - step) / rate))} left" \
            if rate and math.isfinite(total) else ""
        metrics = "".join(f", {key} {value:.4g}" if isinstance(value, float) else f", {key} {value}"
                          for key, value in self.get_metrics(trainer, pl_module).items() if key != "v_num")
        of_total = f"/{total} ({100 * step / total:.0f}%)" if math.isfinite(total) else ""
        log.info("epoch %d step %d%s, %.2f steps/s%s%s", trainer.current_epoch, step, of_total, rate, left, metrics)


class WandbDashboard(L.Callback):
    """What a W&B run shows beside the logged metrics and config: a table of every evaluation, histograms of the
    evaluated pairs' cosines after training, and the saved model folder as an artefact (`log_model_artifact`).

    It does nothing without a WandbLogger, so the model modules never need to know about W&B.
    """

    def __init__(self, model_dir: str, log_model_artifact: bool = True):
        self.model_dir = Path(model_dir)
        self.log_model_artifact = log_model_artifact
        self.evaluations: list[list] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self._record_evaluation(trainer, "dev/")

    def on_test_end(self, trainer, pl_module) -> None:
        self._record_evaluation(trainer, "test/")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """After the test, the last stage of a training run: log the rest and finish the W&B run, so that the next
        run in this process (a sweep's next job, a pipeline's next stage) starts a run of its own."""
        logger = _wandb_logger(trainer)
        if stage != "test" or logger is None or not trainer.is_global_zero:
            return
        import wandb

        logger.log_table("evaluation", columns=["step", "stage", "split", "evaluator", "metric", "value"],
                         data=self.evaluations)
        histograms = self._similarity_histograms(trainer)
        if histograms:
            logger.experiment.log({name: wandb.Histogram(values) for name, values in histograms.items()})
        if self.log_model_artifact and self.model_dir.is_dir():
            artifact = wandb.Artifact(f"model-{logger.experiment.id}", type="model")
            artifact.add_dir(str(self.model_dir))
            logger.experiment.log_artifact(artifact)
        logger.experiment.finish()

    def _record_evaluation(self, trainer, prefix: str) -> None:
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(prefix) and key.count("/") == 2:
                split, evaluator, metric = key.split("/")
                stage = trainer.state.fn.value if trainer.state.fn else ""
                self.evaluations.append([trainer.global_step, stage, split, evaluator, metric, float(value)])

    @staticmethod
    def _similarity_histograms(trainer) -> dict[str, list[float]]:
        """The cosines of each evaluated pair set's positive and negative pairs, from its last evaluation."""
        evaluation = next((c for c in trainer.callbacks if isinstance(c, EvaluationCallback)), None)
        if evaluation is None:
            return {}
        return {f"{evaluator.name}/cosine/{kind}": values
                for evaluators in evaluation.by_split.values() for evaluator in evaluators
                for kind, values in getattr(evaluator, "pair_similarities", {}).items() if values}


def _wandb_logger(trainer) -> WandbLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)
