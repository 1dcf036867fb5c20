"""The bi-encoder objective: embed each text column with one shared encoder and hand the embeddings to a loss."""

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection, PearsonCorrCoef, SpearmanCorrCoef

from embedlab.encoder import SentenceEncoder

NO_WEIGHT_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


class BiEncoderModule(L.LightningModule):
    """Trains a SentenceEncoder with any loss; knows nothing of the loss beyond its call.

    Validation and test batches are STS pairs: the cosine of each pair is correlated with its gold score,
    logged as `<dev|test>/<eval_name>/<spearman|pearson>_cosine`.
    """

    def __init__(self, encoder: SentenceEncoder, loss: nn.Module, text_columns: list[str], eval_name: str = "stsb",
                 lr: float = 2e-5, weight_decay: float = 0.01, warmup_ratio: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.text_columns = list(text_columns)
        self.eval_name = eval_name
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        metrics = MetricCollection({"spearman_cosine": SpearmanCorrCoef(), "pearson_cosine": PearsonCorrCoef()})
        self.sts_metrics = nn.ModuleDict({"dev": metrics.clone(), "test": metrics.clone()})
        # Hugging Face loads backbones in eval mode and Lightning keeps each submodule's mode, so without this
        # dropout would stay off during training.
        self.train()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        embeddings = [self.encoder(batch["features"][column]) for column in self.text_columns]
        loss = self.loss(embeddings, batch.get("target"))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score_sts(batch, "dev")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._score_sts(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_sts("dev")

    def on_test_epoch_end(self) -> None:
        self._log_sts("test")

    def _score_sts(self, batch: dict, split: str) -> None:
        first, second = (self.encoder(batch["features"][column]) for column in ("sentence1", "sentence2"))
        self.sts_metrics[split].update(F.cosine_similarity(first, second).float(), batch["target"].float())

    def _log_sts(self, split: str) -> None:
        metrics = self.sts_metrics[split]
        if not metrics["spearman_cosine"].update_called:
            return
        values = {f"{split}/{self.eval_name}/{name}": value for name, value in metrics.compute().items()}
        metrics.reset()
        self.log_dict(values, prog_bar=split == "dev")

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                (no_decay if name.endswith(NO_WEIGHT_DECAY) else decay).append(parameter)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = math.ceil(self.warmup_ratio * total)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_warmup_decay(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))
