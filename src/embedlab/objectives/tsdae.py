"""TSDAE (Wang et al., 2021): a sentence encoder trained without labels by rebuilding sentences from their embedding.

The encoder embeds a sentence with most of its words deleted; a decoder built from the same checkpoint as a causal
LM rebuilds the original sentence token by token, attending (cross-attention) to nothing but that one embedding.
By default the decoder shares every encoder tensor that exists in both (tying), so only its cross-attention and LM
head transform are new. Only the encoder is saved; it is evaluated as the bi-encoder is.
"""

from collections.abc import Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from embedlab.data.noise import DenoisingCollator, check_deletion_ratio
from embedlab.errors import ConfigError, first_line
from embedlab.losses.reconstruction import IGNORED_LABEL, ReconstructionLoss
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.model_files import load_pretrained, resolve_location
from embedlab.objectives.bi_encoder import BiEncoderModule
from embedlab.objectives.optim import refuse_prompts


class TSDAEModule(BiEncoderModule):
    """A bi-encoder whose training objective is TSDAE's; it evaluates and saves exactly as the bi-encoder does."""

    produces = ReconstructionLoss.consumes

    def __init__(self, encoder: SentenceEncoder, decoder: PreTrainedModel, loss: nn.Module,
                 deletion_ratio: float = 0.6, seed: int = 0, lr: float = 3e-5, weight_decay: float = 0.0,
                 warmup_ratio: float = 0.0, schedule: str = "linear", decoder_dropout: bool = True):
        super().__init__(encoder, loss, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                         schedule=schedule)
        self.decoder = decoder
        self.deletion_ratio = check_deletion_ratio(deletion_ratio)
        self.seed = seed
        self.decoder_dropout = decoder_dropout
        # The decoder also comes from Hugging Face in eval mode; its dropout must train as well, unless switched off.
        self.train()

    def train(self, mode: bool = True) -> "TSDAEModule":
        super().train(mode)
        # The bi-encoder's constructor calls train() before this class has set its attributes.
        if not getattr(self, "decoder_dropout", True):
            # Only the decoder's own module objects: the tied encoder layers are other modules over the same
            # tensors, and keep their dropout.
            self.decoder.eval()
        return self

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "TSDAEModule":
        settings = cfg.model
        check_deletion_ratio(settings.deletion_ratio)  # before the slow part: loading two models
        encoder = SentenceEncoder.from_pretrained(pooling=cfg.pooling.mode, **cfg.backbone)
        check_decoder_tokens(encoder.tokenizer, cfg.backbone.name_or_path)
        decoder = build_decoder(cfg.backbone.name_or_path, cfg.backbone.trust_remote_code)
        if settings.tie_encoder_decoder:
            tie_decoder_to_encoder(encoder.backbone, decoder)
        freeze_lower_layers(encoder.backbone, settings.freeze_layers)
        return cls(encoder, decoder, instantiate(cfg.loss), deletion_ratio=settings.deletion_ratio, seed=cfg.seed,
                   decoder_dropout=settings.decoder_dropout, **cfg.optim)

    def make_collator(self, text_columns: list[str], target_column: str | None,
                      prompts: Mapping[str, str]) -> DenoisingCollator:
        refuse_prompts(prompts, "TSDAE")
        return DenoisingCollator(self.encoder.tokenize, self.deletion_ratio, self.seed)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.reconstruction_loss(batch["features"]["noisy"], batch["features"]["text"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def reconstruction_loss(self, noisy: dict[str, Tensor], original: dict[str, Tensor]) -> Tensor:
        """Teacher forcing: from the embedding of `noisy`, predict each token of `original` from the ones before it."""
        embedding = self.encoder(noisy)
        ids, mask = original["input_ids"], original["attention_mask"]
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORED_LABEL)
        logits = self.decoder(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                              encoder_hidden_states=embedding[:, None],
                              encoder_attention_mask=torch.ones_like(mask[:, :1]), use_cache=False).logits
        return self.loss(logits, labels)


def check_decoder_tokens(tokenizer, backbone: str) -> None:
    """The decoder starts from the tokenizer's first token and pads with its pad token: both must exist."""
    missing = []
    if tokenizer.pad_token_id is None:
        missing.append("a padding token")
    first = tokenizer("a")["input_ids"][:1]
    if not first or first[0] not in tokenizer.all_special_ids:
        missing.append("a start token put before every text (like [CLS] or <s>)")
    if missing:
        raise ConfigError(f"backbone '{backbone}': TSDAE's decoder needs {' and '.join(missing)}, which its "
                          "tokenizer lacks")


def build_decoder(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """The checkpoint as a causal LM whose layers gain cross-attention (new weights) to the sentence embedding."""
    path = resolve_location(str(name_or_path))
    location = str(path) if path is not None else str(name_or_path)
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code, is_decoder=True,
                                            add_cross_attention=True)
    except OSError as error:
        raise ConfigError(f"could not load backbone '{name_or_path}' as TSDAE's decoder: {first_line(error)}") from None
    # load_pretrained would report a missing causal-LM class as an unloadable folder: asked first, it is named.
    remote_class = "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if type(config) not in AutoModelForCausalLM._model_mapping and not remote_class:
        raise ConfigError(f"backbone '{name_or_path}' has no causal-LM form with cross-attention for TSDAE's decoder "
                          f"({type(config).__name__} has no causal-LM class); use a BERT-like backbone")
    decoder, _ = load_pretrained(location, AutoModelForCausalLM, trust_remote_code, config=config)
    if not getattr(decoder.config, "add_cross_attention", False):
        raise ConfigError(f"backbone '{name_or_path}': its causal-LM form ({type(decoder).__name__}) cannot attend "
                          "to an encoder; use a BERT-like backbone")
    return decoder


def tie_decoder_to_encoder(encoder: nn.Module, decoder: PreTrainedModel) -> int:
    """Make every decoder tensor that the encoder has under the same name and shape the encoder's own Parameter.

    The encoder keeps its objects (it is what is saved and what the optimizer already knows); the decoder's
    cross-attention and LM head transform have no counterpart and stay its own. Returns the number tied.
    """
    base = decoder.base_model
    encoder_parameters = dict(encoder.named_parameters())
    tied = 0
    for name, parameter in list(base.named_parameters()):
        shared = encoder_parameters.get(name)
        if shared is not None and shared.shape == parameter.shape:
            module_name, _, attribute = name.rpartition(".")
            setattr(base.get_submodule(module_name), attribute, shared)
            tied += 1
    if not tied:
        raise ConfigError(f"tie_encoder_decoder: the decoder ({type(decoder).__name__}) shares no tensor with the "
                          f"encoder ({type(encoder).__name__}); set model.tie_encoder_decoder=false")
    if getattr(decoder.config, "tie_word_embeddings", False) and decoder.get_output_embeddings() is not None:
        # The LM head read the decoder's old input embeddings; it must read the shared ones now.
        decoder.get_output_embeddings().weight = decoder.get_input_embeddings().weight
    return tied


def freeze_lower_layers(backbone: nn.Module, layers: int) -> None:
    """Freeze the embeddings and the lowest `layers` transformer layers (tied decoder copies freeze with them)."""
    if layers <= 0:
        return
    blocks = getattr(getattr(backbone, "encoder", None), "layer", None)
    embeddings = getattr(backbone, "embeddings", None)
    if blocks is None or embeddings is None:
        raise ConfigError(f"model.freeze_layers: {type(backbone).__name__} has no BERT-like embeddings and "
                          "encoder.layer to freeze")
    if layers > len(blocks):
        raise ConfigError(f"model.freeze_layers={layers} but the backbone has {len(blocks)} layers")
    embeddings.requires_grad_(False)
    for block in blocks[:layers]:
        block.requires_grad_(False)
