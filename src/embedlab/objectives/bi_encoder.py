"""The bi-encoder objective: embed each text column with one shared encoder and hand the embeddings to a loss."""

from collections.abc import Mapping

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn

from embedlab.data.collate import Collator, InputCollator
from embedlab.errors import ConfigError
from embedlab.losses.signature import configured_losses
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.merging import interpolate_weights
from embedlab.objectives.optim import OptimizedModule

# The prompts sentence-transformers' encode_query and encode_document apply, by training column.
PROMPT_NAMES = {"anchor": "query", "positive": "document", "negative": "document"}


class BiEncoderModule(OptimizedModule):
    """Trains a SentenceEncoder with any embedding loss; knows nothing of the loss beyond what it declares.

    Validation and test batches are evaluation inputs: each step returns their embeddings, which the evaluation
    callback scores.
    """

    produces = "embeddings"
    evaluates = "embeddings"

    def __init__(self, encoder: SentenceEncoder, loss: nn.Module | Mapping[str, nn.Module],
                 guide: SentenceEncoder | None = None, lr: float = 2e-5, weight_decay: float = 0.01,
                 warmup_ratio: float = 0.1, schedule: str = "linear", save_merged: bool = False):
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio, schedule=schedule)
        self.encoder = encoder
        # One loss, or one per training source (a batch says which source it is from).
        self.losses = nn.ModuleDict(loss if isinstance(loss, Mapping) else {"all": loss})
        # The guide of a loss that declares one (GISTEmbed's): frozen, in eval mode, never trained or saved.
        self.guide = guide.requires_grad_(False) if guide is not None else None
        # A guide with the encoder's vocabulary and at least its length reads the same token ids; any other
        # tokenises each batch itself.
        self.guide_reads_our_tokens = guide is not None and reads_same_tokens(guide, encoder)
        # The prompts the training data gave, by prompt name (several sources must agree on each).
        self.trained_prompts: dict[str, str] = {}
        self.save_merged = save_merged
        # Hugging Face loads backbones in eval mode and Lightning keeps each submodule's mode, so without this
        # dropout would stay off during training.
        self.train()

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "BiEncoderModule":
        encoder = starting_encoder(cfg)
        if encoder.routed:
            raise ConfigError(f"'{cfg.backbone.name_or_path}' routes queries and documents through separate modules; "
                              "training it needs a route per column, which embedlab does not have")
        if cfg.get("adapter"):
            encoder.add_adapter(instantiate(cfg.adapter, _convert_="all"))
        losses = {source: build_loss(loss_cfg, encoder) for source, loss_cfg in configured_losses(cfg).items()}
        guides = {loss.guide for loss in losses.values() if loss.guide}
        if len(guides) > 1:
            raise ConfigError(f"the losses name different guides {sorted(guides)}; one guide model serves them all")
        guide = (SentenceEncoder.from_pretrained(guides.pop(), trust_remote_code=cfg.backbone.trust_remote_code)
                 if guides else None)
        return cls(encoder, losses, guide, save_merged=cfg.get("save_merged", False), **cfg.optim)

    @property
    def loss(self) -> nn.Module:
        """The loss, for objectives with a single one."""
        if len(self.losses) != 1:
            raise ConfigError(f"this objective trains one loss, not one per source ({', '.join(self.losses)})")
        return next(iter(self.losses.values()))

    def train(self, mode: bool = True) -> "BiEncoderModule":
        super().train(mode)
        if self.guide is not None:
            self.guide.eval()
        return self

    def state_dict(self, *args, **kwargs):
        # The guide is a fixed reference loaded from its own folder: checkpoints need not carry its weights.
        state = super().state_dict(*args, **kwargs)
        return {name: value for name, value in state.items() if not name.startswith("guide.")} \
            if self.guide is not None else state

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        if self.guide is not None:
            state_dict = {**state_dict, **{f"guide.{name}": value for name, value in self.guide.state_dict().items()}}
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def merge_with_start(self, cfg: DictConfig) -> None:
        """The trained weights moved `cfg.merge_with_start` of the way back to the starting model's
        (embedlab.modeling.merging)."""
        interpolate_weights(self.encoder, starting_encoder(cfg), cfg.merge_with_start)

    def make_collator(self, text_columns: list[str], target_column: str | None,
                      prompts: Mapping[str, str]) -> Collator:
        """Tokenises the columns, each behind its prompt: the one given for the column, else the encoder's own for
        the column's role (a query prompt for anchors, a document prompt for positives and negatives). The given
        ones become the encoder's, so that its evaluation and its saved folder use the prompts it trained with."""
        for column, text in prompts.items():
            name = prompt_name(column)
            if self.trained_prompts.setdefault(name, text) != text:
                raise ConfigError(f"two training sources give the {name} prompt different texts "
                                  f"({self.trained_prompts[name]!r} and {text!r}): a model keeps one per role")
            self.encoder.prompts[name] = text
        column_prompts = {column: self.encoder.prompted("", prompt_name(column)) for column in text_columns}
        guide_tokenize = self.guide.tokenize if self.guide is not None and not self.guide_reads_our_tokens else None
        return Collator(self.encoder.tokenize, text_columns, target_column,
                        {column: prompt for column, prompt in column_prompts.items() if prompt}, guide_tokenize)

    def make_eval_collator(self) -> InputCollator:
        return InputCollator(self.encoder.tokenize, self.encoder.prompted)

    def save_model(self, directory) -> None:
        self.encoder.save(directory, merge_adapters=self.save_merged)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss_fn = self.losses[batch["source"]] if "source" in batch else self.loss
        # The collator keeps the columns in the order the loss reads them.
        embeddings = self._embed_for_loss(list(batch["features"].values()), loss_fn)
        extras = {}
        if loss_fn.guide:
            guide_features = batch.get("guide_features", batch["features"])
            with torch.no_grad():
                extras["guide_embeddings"] = [self._embed_by_guide(features, loss_fn)
                                              for features in guide_features.values()]
        loss = loss_fn(embeddings, batch.get("target"), **extras)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _embed_for_loss(self, columns: list[dict[str, torch.Tensor]], loss_fn: nn.Module) -> list[torch.Tensor]:
        # A loss that sees the whole batch at once (in-batch negatives) may ask for it to be embedded in mini-batches,
        # trading a second forward pass for the memory of one mini-batch.
        if loss_fn.mini_batch_size:
            return [self.encoder.forward_in_mini_batches(features, loss_fn.mini_batch_size) for features in columns]
        return self.encoder.forward_columns(columns)

    def _embed_by_guide(self, features: dict[str, torch.Tensor], loss_fn: nn.Module) -> torch.Tensor:
        size = loss_fn.mini_batch_size or features["attention_mask"].shape[0]
        rows = features["attention_mask"].shape[0]
        return torch.cat([self.guide({key: value[start:start + size] for key, value in features.items()})
                          for start in range(0, rows, size)])

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.encoder(batch["features"])[:, :self.encoder.output_dim].float()

    test_step = validation_step


def starting_encoder(cfg: DictConfig) -> SentenceEncoder:
    """The encoder a run starts from: its backbone config, with the pooling it asks for."""
    return SentenceEncoder.from_pretrained(pooling=cfg.pooling.mode, **cfg.backbone)


def reads_same_tokens(guide: SentenceEncoder, encoder: SentenceEncoder) -> bool:
    return (guide.tokenizer.get_vocab() == encoder.tokenizer.get_vocab()
            and guide.max_seq_length >= encoder.max_seq_length and guide.do_lower_case == encoder.do_lower_case)


def prompt_name(column: str) -> str:
    """The prompt name a column's texts are encoded under: sentence-transformers' query and document prompts for
    the retrieval columns, the column's own name for any other."""
    role = "negative" if column.startswith("negative") else column
    return PROMPT_NAMES.get(role, column)


def build_loss(loss_cfg: DictConfig, encoder: SentenceEncoder) -> nn.Module:
    """A configured loss, given the facts of the encoder that it declares it requires."""
    requires = get_class(loss_cfg._target_).requires
    return instantiate(loss_cfg, **{fact: getattr(encoder, fact) for fact in requires})
