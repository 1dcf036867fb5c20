"""The sentence encoder: a Hugging Face backbone, pooling and optional normalisation.

It saves and loads the sentence-transformers folder layout, so a saved model opens unchanged in
`sentence_transformers.SentenceTransformer` and gives the same embeddings.
"""

import contextlib
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel

from embedlab.errors import ConfigError
from embedlab.modeling.batching import in_length_order
from embedlab.modeling.model_files import (
    default_max_seq_length,
    load_pretrained,
    package_version,
    read_json,
    resolve_location,
    save_atomically,
)
from embedlab.modeling.pooling import POOLING_MODES, pool
from embedlab.modeling.precision import autocast, weight_dtype
from embedlab.run_folder import write_json

POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"
# The classic module names: every sentence-transformers release from 2.x to 6.x resolves them.
ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
# The names sentence-transformers' encode_document tries, in order, for a document prompt.
PROMPT_ALIASES = {"document": ("document", "passage", "corpus")}


@dataclass
class Tokenize:
    """The encoder's tokenisation, small enough to send to DataLoader workers without the model."""

    tokenizer: object
    max_seq_length: int
    do_lower_case: bool = False

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(self._cased(texts), padding=True, truncation=True, max_length=self.max_seq_length,
                                   return_tensors="pt"))

    def without_padding(self, texts: list[str]) -> dict[str, list[list[int]]]:
        """Each text's token ids (and masks) at its own length, to be padded per batch with `tokenizer.pad`."""
        return dict(self.tokenizer(self._cased(texts), truncation=True, max_length=self.max_seq_length))

    def in_length_order(self, texts: list[str], batch_size: int, embed: Callable[[dict[str, Tensor]], Tensor],
                        show_progress_bar: bool = False) -> Tensor:
        """`embed` over padded batches of `texts` cut in order of token count; rows in the order of `texts`."""
        # One call to the fast tokenizer for all texts is quicker than one per batch, and its token counts order
        # the batches more tightly than character counts.
        encoded = self.without_padding(texts)

        def embed_rows(indices: list[int]) -> Tensor:
            return embed(self.tokenizer.pad({key: [values[i] for i in indices] for key, values in encoded.items()},
                                            return_tensors="pt"))

        return in_length_order(range(len(texts)), lambda i: len(encoded["input_ids"][i]), batch_size, embed_rows,
                               "encode", show_progress_bar)

    def _cased(self, texts: list[str]) -> list[str]:
        return [text.lower() for text in texts] if self.do_lower_case else texts


class SentenceEncoder(nn.Module):
    """`truncate_dim` keeps the first dimensions of what `encode` returns (a Matryoshka-trained model stays useful
    truncated); as in sentence-transformers it applies after normalisation, so truncated vectors are compared by
    cosine. `forward`, which training uses, always returns the full embeddings.

    `prompts` maps a prompt name to the text put before every input encoded under that name, as
    sentence-transformers stores them ("query" and "document" are what its `encode_query` and `encode_document`
    use); `default_prompt_name` is the one applied when none is named.
    """

    def __init__(self, backbone: nn.Module, tokenizer, pooling: str = "mean", normalize: bool = False,
                 max_seq_length: int = 256, do_lower_case: bool = False, truncate_dim: int | None = None,
                 prompts: dict[str, str] | None = None, default_prompt_name: str | None = None):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ConfigError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {pooling!r}")
        hidden_size = backbone.config.hidden_size
        if truncate_dim is not None and not 1 <= truncate_dim <= hidden_size:
            raise ConfigError(f"truncate_dim must be between 1 and the embedding size {hidden_size}, "
                              f"got {truncate_dim}")
        self.backbone = backbone
        # BERT-style backbones carry a [CLS] pooler that sentence embeddings never use; frozen, it is kept in the
        # saved weights unchanged and DDP does not wait for gradients that never come.
        if isinstance(getattr(backbone, "pooler", None), nn.Module):
            backbone.pooler.requires_grad_(False)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        self.truncate_dim = truncate_dim
        self.prompts = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ConfigError(f"default_prompt_name '{default_prompt_name}' is not one of the prompts "
                              f"{sorted(self.prompts)}")
        self.default_prompt_name = default_prompt_name
        self.compiled_with_frozen_weights = False

    @property
    def embedding_dim(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def output_dim(self) -> int:
        """The size of the vectors `encode` returns."""
        return self.truncate_dim or self.embedding_dim

    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str | None = None, normalize: bool | None = None,
                        max_seq_length: int | None = None, trust_remote_code: bool = False,
                        truncate_dim: int | None = None) -> "SentenceEncoder":
        """Load a sentence-transformers folder or a plain Hugging Face checkpoint (local path or hub id).

        Arguments left as None keep what the saved model says, or the defaults for a plain checkpoint.
        """
        path = resolve_location(str(name_or_path))
        saved = _read_sentence_transformers_layout(path) if path is not None else {}
        location = str(path) if path is not None else str(name_or_path)
        backbone, tokenizer = load_pretrained(location, AutoModel, trust_remote_code)
        if max_seq_length is None:
            max_seq_length = saved.get("max_seq_length") or default_max_seq_length(backbone, tokenizer)
        return cls(
            backbone,
            tokenizer,
            pooling=pooling or saved.get("pooling", "mean"),
            normalize=saved.get("normalize", False) if normalize is None else normalize,
            max_seq_length=int(max_seq_length),
            do_lower_case=saved.get("do_lower_case", False),
            truncate_dim=saved.get("truncate_dim") if truncate_dim is None else truncate_dim,
            prompts=saved.get("prompts"),
            default_prompt_name=saved.get("default_prompt_name"),
        )

    load = from_pretrained

    @property
    def tokenize(self) -> "Tokenize":
        return Tokenize(self.tokenizer, self.max_seq_length, self.do_lower_case)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.sentence_embeddings(self.backbone(**features).last_hidden_state, features["attention_mask"])

    def sentence_embeddings(self, token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
        """The backbone's token embeddings pooled (and normalised) into one embedding per text."""
        embeddings = pool(token_embeddings, attention_mask, self.pooling)
        if self.normalize:
            embeddings = F.normalize(embeddings, p=2, dim=-1)
        return embeddings

    def prompted(self, text: str, prompt_name: str | None = None) -> str:
        """`text` behind the prompt named `prompt_name` (the default prompt when None). A name this model has no
        prompt for adds nothing, as `encode_query` does for a model without a query prompt."""
        return apply_prompt(self.prompts, self.default_prompt_name, text, prompt_name)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False,
               precision: str = "32-true", prompt_name: str | None = None) -> Tensor:
        """Embed texts in eval mode; returns a CPU float tensor in the order of `texts`.

        `prompt_name` puts that prompt before every text (see `prompted`). `precision="bf16-mixed"` runs the model
        under bf16 autocast (README, "Speed and benchmarks").
        """
        if not texts:
            return torch.empty(0, self.output_dim)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device

        def embed(features: dict[str, Tensor]) -> Tensor:
            with autocast(precision, device):
                embeddings = self({key: value.to(device) for key, value in features.items()})
            return embeddings[:, :self.output_dim].float().cpu()

        with self._frozen_weights_context():
            embeddings = self.tokenize.in_length_order([self.prompted(text, prompt_name) for text in texts],
                                                       batch_size, embed, show_progress_bar)
        self.train(was_training)
        return embeddings

    def inference_copy(self, precision: str = "bf16-true", compile: bool = False) -> "SentenceEncoder":
        """A copy of this encoder for `encode` only: eval mode, no gradients, weights cast to `precision`'s dtype.

        Casting the weights once beats autocast, which casts every weight again in every batch. `compile=True` runs
        the backbone through torch.compile with frozen weights: inductor folds them into the graph as constants and
        pre-packs them for oneDNN, which pays most at small batches. Frozen constants are why this is a copy:
        training this encoder afterwards leaves the copy as it was. The first `encode` of a compiled copy compiles.
        """
        frozen = copy.deepcopy(self).to(weight_dtype(precision)).eval().requires_grad_(False)
        if compile:
            frozen.backbone.compile(dynamic=True)
            frozen.compiled_with_frozen_weights = True
        return frozen

    def _frozen_weights_context(self):
        # Dynamo reads inductor's `freezing` when it traces, not only inductor when it compiles, so the setting is
        # patched around the calls (a compile option reaches inductor alone, and the weights stay graph inputs).
        if self.compiled_with_frozen_weights:
            from torch._inductor import config as inductor_config

            return inductor_config.patch(freezing=True)
        return contextlib.nullcontext()

    def forward_in_mini_batches(self, features: dict[str, Tensor], mini_batch_size: int) -> Tensor:
        """`forward` on a large batch with the activation memory of one mini-batch (GradCache).

        Each mini-batch runs without keeping its activations; backward re-runs it, with the random state of the
        first run so that dropout draws the same masks, and back-propagates its share of the embedding gradients.
        The gradients are those of `forward` over the same mini-batches. Torch's non-reentrant checkpoint does the
        re-running: each parameter's gradient is accumulated once per backward, which DDP's hooks expect.
        """
        rows = features["attention_mask"].shape[0]
        parts = []
        for start in range(0, rows, mini_batch_size):
            chunk = _without_trailing_padding({k: v[start:start + mini_batch_size] for k, v in features.items()})
            parts.append(checkpoint(self, chunk, use_reentrant=False, preserve_rng_state=True))
        return torch.cat(parts)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the sentence-transformers layout atomically: a failed save leaves an older model intact."""
        return save_atomically(directory, self._write_layout)

    def _write_layout(self, directory: Path) -> None:
        self.backbone.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
                   {"idx": 1, "name": "1", "path": POOLING_DIR, "type": ST_POOLING}]
        if self.normalize:
            modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIR, "type": ST_NORMALIZE})
            (directory / NORMALIZE_DIR).mkdir()
        write_json(directory / "modules.json", modules)
        write_json(directory / POOLING_DIR / "config.json", {
            "word_embedding_dimension": self.embedding_dim,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
            "pooling_mode_max_tokens": self.pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": False,
        })
        write_json(directory / "sentence_bert_config.json",
                    {"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case})
        write_json(directory / "config_sentence_transformers.json", {
            "__version__": {"embedlab": package_version(), "pytorch": torch.__version__},
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": "cosine",
            # Read by sentence-transformers' SentenceTransformer, which then truncates its encode output too.
            **({"truncate_dim": self.truncate_dim} if self.truncate_dim is not None else {}),
        })


def apply_prompt(prompts: dict[str, str], default_prompt_name: str | None, text: str,
                 prompt_name: str | None = None) -> str:
    """`text` behind the prompt named `prompt_name` (the default prompt when None); a name without a prompt adds
    nothing."""
    name = default_prompt_name if prompt_name is None else prompt_name
    if name is None:
        return text
    found = next((alias for alias in PROMPT_ALIASES.get(name, (name,)) if alias in prompts), None)
    return prompts[found] + text if found else text


def _without_trailing_padding(features: dict[str, Tensor]) -> dict[str, Tensor]:
    """A mini-batch padded to its own longest text: less work, and the attention mask already hid those columns."""
    length = int(features["attention_mask"].any(dim=0).nonzero().max()) + 1
    return {k: v[:, :length] if v.dim() == 2 else v for k, v in features.items()}


def _read_sentence_transformers_layout(path: Path) -> dict:
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return {}
    saved: dict = {}
    modules = read_json(modules_file, list)
    if not all(isinstance(module, dict) and isinstance(module.get("type"), str) for module in modules):
        raise ConfigError(f"{modules_file}: not a sentence-transformers module list (a list of objects with a type)")
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Transformer":
            if module.get("path", "") not in ("", "."):
                raise ConfigError(f"{modules_file}: the transformer must sit in the model's root folder")
        elif kind == "Pooling":
            saved["pooling"] = _pooling_mode(read_json(path / module.get("path", "") / "config.json"))
        elif kind == "Normalize":
            saved["normalize"] = True
        else:
            raise ConfigError(f"{modules_file}: module type {module['type']!r} is not supported "
                              "(supported: Transformer, Pooling, Normalize)")
    st_config = path / "sentence_bert_config.json"
    if st_config.exists():
        config = read_json(st_config)
        saved["max_seq_length"] = config.get("max_seq_length")
        saved["do_lower_case"] = bool(config.get("do_lower_case", False))
    model_config = path / "config_sentence_transformers.json"
    if model_config.exists():
        settings = read_json(model_config)
        saved["truncate_dim"] = settings.get("truncate_dim")
        saved["prompts"] = settings.get("prompts") or {}
        saved["default_prompt_name"] = settings.get("default_prompt_name")
    return saved


def _pooling_mode(config: dict) -> str:
    if "pooling_mode" in config:  # the sentence-transformers 5+ spelling
        mode = config["pooling_mode"]
    else:
        flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
        chosen = [mode for mode, key in flags.items() if config.get(key)]
        if len(chosen) != 1 or config.get("pooling_mode_mean_sqrt_len_tokens"):
            raise ConfigError(f"pooling config {config} is not one of {', '.join(POOLING_MODES)}")
        mode = chosen[0]
    if mode not in POOLING_MODES:
        raise ConfigError(f"saved pooling mode {mode!r} is not supported; choose one of {', '.join(POOLING_MODES)}")
    return mode
