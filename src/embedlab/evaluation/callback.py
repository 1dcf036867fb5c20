"""The evaluators as a Lightning callback: they score the model being trained at each validation."""

import lightning as L

from embedlab.evaluation.encoding import Evaluator
from embedlab.evaluation.runner import run_evaluators


class EvaluationCallback(L.Callback):
    """Runs `evaluators` on `pl_module.encoder` at the end of every validation (not the sanity check) and logs
    their numeric metrics under their own keys ("liveqa-med/ndcg@10", ...), so checkpoints may monitor them.

    The evaluators run on the main process only: their metrics need the whole corpus or pair set, not a shard.
    """

    def __init__(self, evaluators: dict[str, Evaluator]):
        self.evaluators = evaluators

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        results, _ = run_evaluators(pl_module.encoder, self.evaluators)
        numeric = {key: float(value) for key, value in results.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        pl_module.log_dict(numeric, rank_zero_only=True)
