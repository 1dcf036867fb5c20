"""The cross-encoder objective: score each pair jointly and hand the logits to a pair loss."""

from collections.abc import Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from embedlab.data.collate import PairCollator, PairInputCollator
from embedlab.errors import ConfigError
from embedlab.modeling.cross_encoder import CrossEncoder
from embedlab.objectives.optim import OptimizedModule, refuse_prompts


class CrossEncoderModule(OptimizedModule):
    """Trains a CrossEncoder with a regression (score) or classification (label) loss.

    Validation and test batches are evaluation pairs: each step returns what `CrossEncoder.predict` gives for them
    (the sigmoid score of one logit, or the logits of several), which the evaluation callback scores.
    """

    produces = "pair_logits"
    evaluates = "pair_scores"

    def __init__(self, cross_encoder: CrossEncoder, loss: nn.Module, lr: float = 2e-5, weight_decay: float = 0.01,
                 warmup_ratio: float = 0.1, schedule: str = "linear"):
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio, schedule=schedule)
        self.cross_encoder = cross_encoder
        self.loss = loss
        # Hugging Face loads models in eval mode and Lightning keeps each submodule's mode: dropout must train.
        self.train()

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "CrossEncoderModule":
        loss = instantiate(cfg.loss)
        backbone = cfg.backbone
        cross_encoder = CrossEncoder.from_pretrained(
            backbone.name_or_path, num_labels=loss.num_labels, trust_remote_code=backbone.trust_remote_code,
            max_seq_length=cfg.model.get("max_seq_length"), dropout_masks=backbone.get("dropout_masks", "torch"))
        if cross_encoder.num_labels != loss.num_labels:
            raise ConfigError(f"loss '{type(loss).__name__}' needs {loss.num_labels} outputs but the cross-encoder "
                              f"'{backbone.name_or_path}' has {cross_encoder.num_labels}")
        return cls(cross_encoder, loss, **cfg.optim)

    def make_collator(self, text_columns: list[str], target_column: str, prompts: Mapping[str, str]) -> PairCollator:
        refuse_prompts(prompts, "a cross-encoder")
        return PairCollator(self.cross_encoder.tokenize_pairs, text_columns, target_column)

    def make_eval_collator(self) -> PairInputCollator:
        return PairInputCollator(self.cross_encoder.tokenize_pairs)

    def save_model(self, directory) -> None:
        self.cross_encoder.save(directory)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.cross_encoder(batch["features"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.cross_encoder.activation(self.cross_encoder(batch["features"])).float()

    test_step = validation_step
