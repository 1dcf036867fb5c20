"""Lightning callbacks of the training run."""

import time

import lightning as L


class ThroughputMeter(L.Callback):
    """Training samples per second over the whole fit, all processes together, evaluation time excluded."""

    def __init__(self):
        self.samples = 0
        self.elapsed = 0.0
        self._started = None
        self._evaluating_since = None
        self._evaluation_time = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.elapsed if self.elapsed else 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += batch["size"] * trainer.world_size

    def on_validation_start(self, trainer, pl_module) -> None:
        self._evaluating_since = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._evaluating_since is not None:
            self._evaluation_time += time.perf_counter() - self._evaluating_since
            self._evaluating_since = None

    def on_train_end(self, trainer, pl_module) -> None:
        self.elapsed = time.perf_counter() - self._started - self._evaluation_time
