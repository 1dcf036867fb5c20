"""The sentence encoder: a chain of modules (a Hugging Face backbone, pooling, dense layers, normalisation; or a
static embedding; or a router between such chains), with prompts.

It saves and loads the sentence-transformers folder layout, so a saved model opens unchanged in
`sentence_transformers.SentenceTransformer` and gives the same embeddings, and a sentence-transformers folder
loads here with all of its modules.
"""

import contextlib
import copy
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from embedlab.errors import ConfigError
from embedlab.modeling.adapters import attach_adapter
from embedlab.modeling.dropout import use_dropout_masks
from embedlab.modeling.model_files import (
    package_version,
    read_json,
    resolve_location,
    save_atomically,
)
from embedlab.modeling.modules import (
    SENTENCE_EMBEDDING,
    TOKEN_VECTORS,
    Backbone,
    Normalize,
    Pooling,
    Router,
    backbones,
    chain_output_dim,
    poolings,
)
from embedlab.modeling.pooling import checked_mode
from embedlab.modeling.precision import autocast, weight_dtype
from embedlab.modeling.st_layout import has_layout, read_modules, write_modules
from embedlab.modeling.tokenization import pad_on_the_left
from embedlab.run_folder import write_json

MODEL_CONFIG = "config_sentence_transformers.json"
# The names sentence-transformers' encode_document tries, in order, for a document prompt.
PROMPT_ALIASES = {"document": ("document", "passage", "corpus")}
# The prompt names that are also tasks, which choose a Router's route, as encode_query and encode_document set them.
TASKS = ("query", "document")


class SentenceEncoder(nn.Module):
    """`truncate_dim` keeps the first dimensions of what `encode` returns (a Matryoshka-trained model stays useful
    truncated); as in sentence-transformers it applies after normalisation, so truncated vectors are compared by
    cosine. `forward`, which training uses, always returns the full embeddings.

    `prompts` maps a prompt name to the text put before every input encoded under that name, as
    sentence-transformers stores them ("query" and "document" are what its `encode_query` and `encode_document`
    use); `default_prompt_name` is the one applied when none is named.
    """

    def __init__(self, modules: list[nn.Module], truncate_dim: int | None = None,
                 prompts: dict[str, str] | None = None, default_prompt_name: str | None = None):
        super().__init__()
        self.pipeline = nn.ModuleList(modules)
        if truncate_dim is not None and not 1 <= truncate_dim <= self.embedding_dim:
            raise ConfigError(f"truncate_dim must be between 1 and the embedding size {self.embedding_dim}, "
                              f"got {truncate_dim}")
        self.truncate_dim = truncate_dim
        self.prompts = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ConfigError(f"default_prompt_name '{default_prompt_name}' is not one of the prompts "
                              f"{sorted(self.prompts)}")
        self.default_prompt_name = default_prompt_name
        self.compiled_with_frozen_weights = False

    @property
    def embedding_dim(self) -> int:
        return chain_output_dim(self.pipeline)

    @property
    def output_dim(self) -> int:
        """The size of the vectors `encode` returns."""
        return self.truncate_dim or self.embedding_dim

    @property
    def input_module(self) -> nn.Module:
        return self.pipeline[0]

    @property
    def backbone(self) -> nn.Module:
        """The Hugging Face model of a model whose chain starts with one (not a static or routed model)."""
        if not isinstance(self.input_module, Backbone):
            raise ConfigError(f"this model starts with a {type(self.input_module).__name__}, not a transformer "
                              "backbone")
        return self.input_module.model

    @property
    def tokenizer(self):
        return self.input_module.tokenizer

    @property
    def max_seq_length(self) -> int | None:
        return getattr(self.input_module, "max_seq_length", None)

    @property
    def do_lower_case(self) -> bool:
        return getattr(self.input_module, "do_lower_case", False)

    @property
    def pooling(self) -> str | None:
        found = poolings(self.pipeline)
        return found[0].mode if found else None

    @property
    def normalize(self) -> bool:
        return isinstance(self.pipeline[-1], Normalize)

    @property
    def routed(self) -> bool:
        return isinstance(self.input_module, Router)

    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str | None = None, normalize: bool | None = None,
                        max_seq_length: int | None = None, trust_remote_code: bool = False,
                        truncate_dim: int | None = None, gradient_checkpointing: bool = False,
                        dropout_masks: str = "torch", sequence_packing: bool = False) -> "SentenceEncoder":
        """Load a sentence-transformers folder (any chain of the modules in embedlab.modeling.modules) or a plain
        Hugging Face checkpoint (local path or hub id); a plain checkpoint gets mean pooling unless `pooling` says.

        Arguments left as None keep what the saved model says. `pooling` replaces the mode of every Pooling module
        (with "lasttoken", tokenizers that name no padding side pad on the left), `normalize` adds or removes a final
        Normalize, `max_seq_length` applies to every backbone.
        `gradient_checkpointing` recomputes the backbones' activations in backward: less memory for more compute.
        `dropout_masks="packed"` draws the backbones' dropout masks four elements to a random draw on the CPU
        (embedlab.modeling.dropout), `"torch"` with torch's own dropout.
        `sequence_packing` runs training batches (`forward_columns`) packed into rows where the backbone supports it
        (embedlab.modeling.packing).
        """
        path = resolve_location(str(name_or_path))
        if path is not None and has_layout(path):
            modules, settings = read_modules(path, trust_remote_code), _read_settings(path)
        else:
            backbone = Backbone.load(str(path or name_or_path), trust_remote_code)
            modules, settings = [backbone, Pooling(backbone.output_dim, pooling or "mean")], {}
        for module in poolings(modules) if pooling else ():
            module.mode = checked_mode(pooling)
        if normalize is not None:
            modules = modules[:-1] if isinstance(modules[-1], Normalize) else modules
            modules += [Normalize()] if normalize else []
        for backbone in backbones(modules):
            # Chosen here rather than read from a saved folder, whose tokenizer keeps the side it was saved with.
            if pooling == "lasttoken":
                pad_on_the_left(backbone.tokenizer)
            if max_seq_length is not None:
                backbone.max_seq_length = int(max_seq_length)
            if gradient_checkpointing:
                _checkpoint_gradients(backbone.model)
            use_dropout_masks(backbone.model, dropout_masks)
            backbone.sequence_packing = sequence_packing
        return cls(modules, truncate_dim=settings.get("truncate_dim") if truncate_dim is None else truncate_dim,
                   prompts=settings.get("prompts"), default_prompt_name=settings.get("default_prompt_name"))

    load = from_pretrained

    def add_adapter(self, config) -> None:
        """Train only a fresh PEFT adapter (`config`: a `peft.PeftConfig`, e.g. `peft.LoraConfig(r=16)`) on the
        backbone; every other weight of the chain is frozen too."""
        backbone = self.backbone  # a static or routed model has no single backbone to adapt
        self.requires_grad_(False)
        self.input_module.model = attach_adapter(backbone, config)

    @property
    def tokenize(self):
        """The tokenisation of training and of inputs without a task (a Router's default route)."""
        return self.input_module.tokenize

    def tokenize_for(self, task: str | None):
        return self.input_module.tokenize_for(task) if self.routed else self.tokenize

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return _run(self.pipeline, features)[SENTENCE_EMBEDDING]

    def forward_columns(self, columns: list[dict[str, Tensor]]) -> list[Tensor]:
        """`forward` of each column of a training batch, the token ids of all columns looked up in the word-embedding
        table in one call. The table's gradient is then one dense tensor of the table's size, built once, instead of
        one per column, each allocated, filled and summed into the next: for a 30k-token vocabulary those passes
        over memory cost more than the lookup's share of the backbone. Embeddings equal `forward`'s.

        A backbone that packs sequences runs all columns' texts packed into rows instead, in one forward pass
        (embedlab.modeling.packing)."""
        if isinstance(self.input_module, Backbone) and self.input_module.packs_sequences:
            return [self.sentence_embeddings(token_embeddings, features["attention_mask"]) for token_embeddings, features
                    in zip(self.input_module.packed_token_embeddings(columns), columns)]
        table = self.input_module.trained_token_table if isinstance(self.input_module, Backbone) else None
        if table is None or len(columns) < 2:
            return [self(features) for features in columns]
        token_ids = [features["input_ids"] for features in columns]
        vectors = table(torch.cat([ids.reshape(-1) for ids in token_ids])).split([ids.numel() for ids in token_ids])
        return [self({**features, TOKEN_VECTORS: column_vectors.view(*ids.shape, -1)})
                for features, ids, column_vectors in zip(columns, token_ids, vectors)]

    def sentence_embeddings(self, token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
        """The chain after the backbone of a model that starts with one: its token embeddings pooled (transformed,
        normalised) into one embedding per text. An exported graph runs this on its own backbone's output."""
        features = {"token_embeddings": token_embeddings, "attention_mask": attention_mask}
        return _run(self.pipeline[1:], features)[SENTENCE_EMBEDDING]

    def prompted(self, text: str, prompt_name: str | None = None) -> str:
        """`text` behind the prompt named `prompt_name` (the default prompt when None). A name this model has no
        prompt for adds nothing, as `encode_query` does for a model without a query prompt."""
        return apply_prompt(self.prompts, self.default_prompt_name, text, prompt_name)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False,
               precision: str = "32-true", prompt_name: str | None = None) -> Tensor:
        """Embed texts in eval mode; returns a CPU float tensor in the order of `texts`.

        `prompt_name` puts that prompt before every text (see `prompted`); "query" and "document" are also the
        task that picks a Router's route, as in sentence-transformers' `encode_query` and `encode_document`.
        `precision="bf16-mixed"` runs the model under bf16 autocast (README, "Speed and benchmarks").
        """
        if not texts:
            return torch.empty(0, self.output_dim)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        tokenize = self.tokenize_for(prompt_name if prompt_name in TASKS else None)

        def embed(features: dict) -> Tensor:
            with autocast(precision, device):
                embeddings = self(_to_device(features, device))
            return embeddings[:, :self.output_dim].float().cpu()

        with self._frozen_weights_context():
            embeddings = tokenize.in_length_order([self.prompted(text, prompt_name) for text in texts], batch_size,
                                                  embed, show_progress_bar)
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
            for backbone in backbones(frozen.pipeline):
                backbone.model.compile(dynamic=True)
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
        if "attention_mask" not in features:
            raise ConfigError("mini-batches (GradCache) need a transformer backbone's padded batches")
        rows = features["attention_mask"].shape[0]
        parts = []
        for start in range(0, rows, mini_batch_size):
            chunk = _without_trailing_padding({k: v[start:start + mini_batch_size] for k, v in features.items()})
            parts.append(checkpoint(self, chunk, use_reentrant=False, preserve_rng_state=True))
        return torch.cat(parts)

    def save(self, directory: str | os.PathLike, merge_adapters: bool = False) -> Path:
        """Write the sentence-transformers layout atomically: a failed save leaves an older model intact.

        A backbone with an adapter is saved as the adapter alone (PEFT's layout, naming its base model), or with
        `merge_adapters` merged into full weights."""
        return save_atomically(directory, lambda staging: self._write_layout(staging, merge_adapters))

    def _write_layout(self, directory: Path, merge_adapters: bool) -> None:
        write_modules(directory, list(self.pipeline), merge_adapters)
        write_json(directory / MODEL_CONFIG, {
            "__version__": {"embedlab": package_version(), "pytorch": torch.__version__},
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": "cosine",
            # Read by sentence-transformers' SentenceTransformer, which then truncates its encode output too.
            **({"truncate_dim": self.truncate_dim} if self.truncate_dim is not None else {}),
        })


def _checkpoint_gradients(model: nn.Module) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"backbone.gradient_checkpointing: {type(model).__name__} does not support it")
    # Non-reentrant: it needs no gradient on the inputs, so it also works when an adapter freezes the embeddings.
    # transformers 5 renamed the switch; releases before it have only the old name.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _run(modules, features: dict) -> dict:
    for module in modules:
        features = module(features)
    return features


def _to_device(features: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in features.items()}


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


def _read_settings(path: Path) -> dict:
    """The model-wide settings of config_sentence_transformers.json: prompts and the truncation."""
    model_config = path / MODEL_CONFIG
    if not model_config.is_file():
        return {}
    settings = read_json(model_config)
    return {"truncate_dim": settings.get("truncate_dim"), "prompts": settings.get("prompts") or {},
            "default_prompt_name": settings.get("default_prompt_name")}
