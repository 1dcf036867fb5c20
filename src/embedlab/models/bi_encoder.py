"""The bi-encoder objective: embed each text column with one shared encoder and hand the embeddings to a loss."""

import inspect

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MetricCollection, PearsonCorrCoef, SpearmanCorrCoef

from embedlab.data.collate import Collator
from embedlab.encoder import SentenceEncoder
from embedlab.errors import ConfigError
from embedlab.models.optim import adamw_with_warmup, check_schedule


class BiEncoderModule(L.LightningModule):
    """Trains a SentenceEncoder with any embedding loss; knows nothing of the loss beyond its call.

    Validation and test batches are STS pairs: the cosine of each pair is correlated with its gold score,
    logged as `<dev|test>/<eval_name>/<spearman|pearson>_cosine`.
    """

    produces = "embeddings"

    def __init__(self, encoder: SentenceEncoder, loss: nn.Module, text_columns: list[str], eval_name: str = "stsb",
                 lr: float = 2e-5, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
                 schedule: str = "linear"):
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.text_columns = list(text_columns)
        self.eval_name = eval_name
        self.optim = {"lr": lr, "weight_decay": weight_decay, "warmup_ratio": warmup_ratio,
                      "schedule": check_schedule(schedule)}
        metrics = MetricCollection({"spearman_cosine": SpearmanCorrCoef(), "pearson_cosine": PearsonCorrCoef()})
        self.sts_metrics = nn.ModuleDict({"dev": metrics.clone(), "test": metrics.clone()})
        # Hugging Face loads backbones in eval mode and Lightning keeps each submodule's mode, so without this
        # dropout would stay off during training.
        self.train()

    @classmethod
    def from_config(cls, cfg: DictConfig, text_columns: list[str]) -> "BiEncoderModule":
        check_sts_evaluation(cfg, "bi_encoder")
        encoder = SentenceEncoder.from_pretrained(pooling=cfg.pooling.mode, **cfg.backbone)
        needs_dim = "embedding_dim" in inspect.signature(get_class(cfg.loss._target_)).parameters
        loss = instantiate(cfg.loss, **({"embedding_dim": encoder.embedding_dim} if needs_dim else {}))
        return cls(encoder, loss, text_columns, eval_name=cfg.evaluation.name, **cfg.optim)

    def make_collator(self, text_columns: list[str], target_column: str | None) -> Collator:
        return Collator(self.encoder.tokenize, text_columns, target_column)

    def save_model(self, directory) -> None:
        self.encoder.save(directory)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        embeddings = [self._embed_for_loss(batch["features"][column]) for column in self.text_columns]
        loss = self.loss(embeddings, batch.get("target"))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _embed_for_loss(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        # A loss that sees the whole batch at once (in-batch negatives) may ask for it to be embedded in mini-batches,
        # trading a second forward pass for the memory of one mini-batch.
        mini_batch_size = getattr(self.loss, "mini_batch_size", None)
        if mini_batch_size:
            return self.encoder.forward_in_mini_batches(features, mini_batch_size)
        return self.encoder(features)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score_sts(batch, "dev")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._score_sts(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("dev")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _score_sts(self, batch: dict, split: str) -> None:
        first, second = (self.encoder(batch["features"][column]) for column in ("sentence1", "sentence2"))
        self.sts_metrics[split].update(F.cosine_similarity(first, second).float(), batch["target"].float())

    def _log_metrics(self, split: str) -> None:
        log_split_metrics(self, self.sts_metrics[split], split, self.eval_name)

    def configure_optimizers(self):
        return adamw_with_warmup(self, **self.optim)


def check_sts_evaluation(cfg: DictConfig, model_name: str) -> None:
    """Models that score embeddings by cosine evaluate on STS sets: a score column, not class labels."""
    if cfg.evaluation.get("target", "score") != "score":
        raise ConfigError(f"model '{model_name}' evaluates STS sets (a score column); evaluation "
                          f"'{cfg.evaluation.name}' has target '{cfg.evaluation.target}'")


def log_split_metrics(module: L.LightningModule, metrics: MetricCollection, split: str, eval_name: str) -> None:
    """Log `<split>/<eval_name>/<metric>` once per evaluation, then reset for the next one."""
    if not any(metric.update_called for metric in metrics.values()):
        return
    values = {f"{split}/{eval_name}/{name}": value for name, value in metrics.compute().items()}
    metrics.reset()
    module.log_dict(values, prog_bar=split == "dev")
