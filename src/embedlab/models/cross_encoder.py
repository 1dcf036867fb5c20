"""The cross-encoder objective: score each pair jointly and hand the logits to a pair loss."""

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn
from torchmetrics import (
    Accuracy,
    F1Score,
    MetricCollection,
    PearsonCorrCoef,
    SpearmanCorrCoef,
)

from embedlab.cross_encoder import CrossEncoder
from embedlab.data.collate import PairCollator
from embedlab.errors import ConfigError
from embedlab.models.bi_encoder import log_split_metrics
from embedlab.models.optim import adamw_with_warmup, check_schedule


class CrossEncoderModule(L.LightningModule):
    """Trains a CrossEncoder with a regression (score) or classification (label) loss.

    Evaluation on STS pairs logs `<split>/<eval_name>/spearman` and `pearson` of the sigmoid scores; on labelled
    pairs it logs `accuracy` and macro `f1` of the argmax class.
    """

    produces = "pair_logits"

    def __init__(self, cross_encoder: CrossEncoder, loss: nn.Module, eval_name: str = "stsb",
                 eval_target: str = "score", lr: float = 2e-5, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
                 schedule: str = "linear"):
        super().__init__()
        self.cross_encoder = cross_encoder
        self.loss = loss
        self.eval_name = eval_name
        self.eval_target = eval_target
        self.optim = {"lr": lr, "weight_decay": weight_decay, "warmup_ratio": warmup_ratio,
                      "schedule": check_schedule(schedule)}
        if eval_target == "score":
            if cross_encoder.num_labels != 1:
                raise ConfigError(f"evaluation '{eval_name}' scores pairs, but the cross-encoder has "
                                  f"{cross_encoder.num_labels} outputs; evaluate it on labelled pairs")
            metrics = MetricCollection({"spearman": SpearmanCorrCoef(), "pearson": PearsonCorrCoef()})
        else:
            classes = cross_encoder.num_labels
            metrics = MetricCollection({"accuracy": Accuracy(task="multiclass", num_classes=classes),
                                        "f1": F1Score(task="multiclass", num_classes=classes, average="macro")})
        self.eval_metrics = nn.ModuleDict({"dev": metrics.clone(), "test": metrics.clone()})
        # Hugging Face loads models in eval mode and Lightning keeps each submodule's mode: dropout must train.
        self.train()

    @classmethod
    def from_config(cls, cfg: DictConfig, text_columns: list[str]) -> "CrossEncoderModule":
        loss_class = get_class(cfg.loss._target_)
        loss = instantiate(cfg.loss)
        backbone = cfg.backbone
        cross_encoder = CrossEncoder.from_pretrained(
            backbone.name_or_path, num_labels=loss.num_labels, trust_remote_code=backbone.trust_remote_code,
            max_seq_length=cfg.model.get("max_seq_length"))
        if cross_encoder.num_labels != loss.num_labels:
            raise ConfigError(f"loss '{loss_class.__name__}' needs {loss.num_labels} outputs but the cross-encoder "
                              f"'{backbone.name_or_path}' has {cross_encoder.num_labels}")
        return cls(cross_encoder, loss, eval_name=cfg.evaluation.name,
                   eval_target=cfg.evaluation.get("target", "score"), **cfg.optim)

    def make_collator(self, text_columns: list[str], target_column: str) -> PairCollator:
        return PairCollator(self.cross_encoder.tokenize_pairs, text_columns, target_column)

    def save_model(self, directory) -> None:
        self.cross_encoder.save(directory)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.cross_encoder(batch["features"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score(batch, "dev")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._score(batch, "test")

    def on_validation_epoch_end(self) -> None:
        log_split_metrics(self, self.eval_metrics["dev"], "dev", self.eval_name)

    def on_test_epoch_end(self) -> None:
        log_split_metrics(self, self.eval_metrics["test"], "test", self.eval_name)

    def _score(self, batch: dict, split: str) -> None:
        logits = self.cross_encoder(batch["features"])
        if self.eval_target == "score":
            predictions = self.cross_encoder.activation(logits).float()
            self.eval_metrics[split].update(predictions, batch["target"].float())
        else:
            self.eval_metrics[split].update(logits.argmax(dim=-1), batch["target"])

    def configure_optimizers(self):
        return adamw_with_warmup(self, **self.optim)
