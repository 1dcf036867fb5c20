"""The bi-encoder objective: embed each text column with one shared encoder and hand the embeddings to a loss."""

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn

from embedlab.data.collate import Collator, InputCollator
from embedlab.errors import ConfigError
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.objectives.optim import OptimizedModule


class BiEncoderModule(OptimizedModule):
    """Trains a SentenceEncoder with any embedding loss; knows nothing of the loss beyond what it declares.

    Validation and test batches are evaluation inputs: each step returns their embeddings, which the evaluation
    callback scores.
    """

    produces = "embeddings"
    evaluates = "embeddings"

    def __init__(self, encoder: SentenceEncoder, loss: nn.Module, lr: float = 2e-5, weight_decay: float = 0.01,
                 warmup_ratio: float = 0.1, schedule: str = "linear", save_merged: bool = False):
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio, schedule=schedule)
        self.encoder = encoder
        self.loss = loss
        self.save_merged = save_merged
        # Hugging Face loads backbones in eval mode and Lightning keeps each submodule's mode, so without this
        # dropout would stay off during training.
        self.train()

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "BiEncoderModule":
        encoder = SentenceEncoder.from_pretrained(pooling=cfg.pooling.mode, **cfg.backbone)
        if encoder.routed:
            raise ConfigError(f"'{cfg.backbone.name_or_path}' routes queries and documents through separate modules; "
                              "training it needs a route per column, which embedlab does not have")
        if cfg.get("adapter"):
            encoder.add_adapter(instantiate(cfg.adapter, _convert_="all"))
        return cls(encoder, build_loss(cfg, encoder), save_merged=cfg.get("save_merged", False), **cfg.optim)

    def make_collator(self, text_columns: list[str], target_column: str | None) -> Collator:
        return Collator(self.encoder.tokenize, text_columns, target_column)

    def make_eval_collator(self) -> InputCollator:
        return InputCollator(self.encoder.tokenize, self.encoder.prompted)

    def save_model(self, directory) -> None:
        self.encoder.save(directory, merge_adapters=self.save_merged)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # The collator keeps the columns in the order the loss reads them.
        embeddings = [self._embed_for_loss(features) for features in batch["features"].values()]
        loss = self.loss(embeddings, batch.get("target"))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _embed_for_loss(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        # A loss that sees the whole batch at once (in-batch negatives) may ask for it to be embedded in mini-batches,
        # trading a second forward pass for the memory of one mini-batch.
        if self.loss.mini_batch_size:
            return self.encoder.forward_in_mini_batches(features, self.loss.mini_batch_size)
        return self.encoder(features)

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.encoder(batch["features"])[:, :self.encoder.output_dim].float()

    test_step = validation_step


def build_loss(cfg: DictConfig, encoder: SentenceEncoder) -> nn.Module:
    """The configured loss, given the facts of the encoder that it declares it requires."""
    requires = get_class(cfg.loss._target_).requires
    return instantiate(cfg.loss, **{fact: getattr(encoder, fact) for fact in requires})
