"""The evaluators during training, as a Lightning callback.

The `dev/...` evaluators run at every validation (their metric picks the best checkpoint), the `test/...` ones at
the test after training. Each process embeds its share of the inputs, which the data module serves from
`inputs(split)`; the callback gathers the outputs in input order and every process scores the whole set, so all
processes log the same figures and none waits for another to finish scoring.
"""

from collections.abc import Mapping

import lightning as L
import torch

from embedlab.distributed import gather_in_order
from embedlab.errors import ConfigError
from embedlab.evaluation.encoding import (
    SPLITS,
    Metrics,
    distinct,
    positions_of,
    split_of,
)


class EvaluationCallback(L.Callback):
    def __init__(self, evaluators: Mapping[str, object]):
        self.by_split: dict[str, list] = {split: [] for split in SPLITS}
        for key, evaluator in evaluators.items():
            split = split_of(evaluator.name)
            if split not in self.by_split:
                raise ConfigError(f"evaluation.{key}: during training an evaluator's name starts with dev/ or test/, "
                                  f"got '{evaluator.name}'")
            if not hasattr(evaluator, "score"):
                raise ConfigError(f"evaluation.{key} ({type(evaluator).__name__}) runs after training only "
                                  "(scripts/evaluate.py), not during it")
            self.by_split[split].append(evaluator)
        self._inputs = {split: distinct(input for evaluator in evaluators for input in evaluator.inputs)
                        for split, evaluators in self.by_split.items()}
        self._collected: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.last_metrics: Metrics = {}

    def inputs(self, split: str) -> list:
        """Every distinct input the split's evaluators need the model's output for."""
        return self._inputs[split]

    def evaluators(self) -> list:
        """Every evaluator, dev then test."""
        return [evaluator for evaluators in self.by_split.values() for evaluator in evaluators]

    def check_model(self, model_name: str, produces: str) -> None:
        """Every evaluator must score what the model produces for its inputs: embeddings or pair scores."""
        for evaluator in self.evaluators():
            if evaluator.consumes != produces:
                raise ConfigError(f"evaluator '{evaluator.name}' ({type(evaluator).__name__}) scores "
                                  f"{evaluator.consumes}, but model '{model_name}' gives {produces}")

    def dev_metric(self) -> str | None:
        """The key of the first dev evaluator's main metric."""
        dev = self.by_split["dev"]
        return f"{dev[0].name}/{dev[0].main_metric}" if dev else None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._collected = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collected.append((batch["index"], outputs))

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._score("dev", pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._score("test", pl_module)

    def _score(self, split: str, pl_module: L.LightningModule) -> None:
        inputs = self._inputs[split]
        if not inputs:
            return
        indices = torch.cat([index for index, _ in self._collected]) if self._collected else torch.empty(0, dtype=torch.long)
        values = (torch.cat([output for _, output in self._collected]) if self._collected
                  else torch.empty(0, device=pl_module.device))
        self._collected = []
        outputs = gather_in_order(indices, values, len(inputs)).cpu()
        metrics: Metrics = {}
        for evaluator in self.by_split[split]:
            metrics.update(evaluator.score(outputs[positions_of(evaluator.inputs, inputs)]))
        self.last_metrics = metrics
        numeric = {key: float(value) for key, value in metrics.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        headline = {f"{evaluator.name}/{evaluator.main_metric}" for evaluator in self.by_split[split]}
        # Every process computed the same figures from the same gathered outputs: nothing to reduce.
        for shown in (True, False):
            part = {key: value for key, value in numeric.items() if (key in headline) == shown}
            if part:
                pl_module.log_dict(part, prog_bar=shown, sync_dist=False)
