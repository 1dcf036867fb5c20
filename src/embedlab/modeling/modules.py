"""The modules a sentence encoder chains, one per sentence-transformers module type, each reading and writing its
own folder as sentence-transformers lays it out.

Modules pass a dict of features along, as sentence-transformers' do: an input module turns tokenised text into
`token_embeddings` (Backbone) or a `sentence_embedding` (StaticEmbedding); Pooling turns token embeddings into the
sentence embedding; Dense and Normalize transform one entry. A Router holds one chain per route and follows the
route that its tokenisation wrote into the features.
"""

import importlib
import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel

from embedlab.errors import ConfigError
from embedlab.modeling.adapters import adapter_base, has_adapter, load_adapter, merged
from embedlab.modeling.model_files import (
    default_max_seq_length,
    load_pretrained,
    read_json,
)
from embedlab.modeling.packing import pack_columns, supports_packing
from embedlab.modeling.pooling import POOLING_MODES, checked_mode, pool
from embedlab.modeling.tokenization import (
    RoutedTokenize,
    StaticTokenize,
    Tokenize,
    prepare_tokenizer,
)
from embedlab.run_folder import write_json

SENTENCE_EMBEDDING = "sentence_embedding"
WEIGHTS_FILE = "model.safetensors"
MODULE_CONFIG = "config.json"
BACKBONE_CONFIG = "sentence_bert_config.json"
# What a Hugging Face encoder or decoder reads from the features; the rest (token embeddings, a route) is ours.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The word-embedding vectors of `input_ids`, looked up ahead (SentenceEncoder.forward_columns); the backbone reads
# them in place of the ids.
TOKEN_VECTORS = "token_vectors"


class Backbone(nn.Module):
    """A Hugging Face model (encoder or decoder) and its tokenizer: sentence-transformers' Transformer module."""

    def __init__(self, model: nn.Module, tokenizer, max_seq_length: int, do_lower_case: bool = False):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        # Decoders take no token_type_ids, which some tokenizers still return. (A PEFT wrapper's forward takes
        # anything and hands it to the base model's.)
        base_model = model.get_base_model() if has_adapter(model) else model
        accepted = inspect.signature(base_model.forward).parameters
        self.model_inputs = tuple(key for key in MODEL_INPUTS if key in accepted)
        self.takes_token_vectors = "inputs_embeds" in accepted
        # BERT-style backbones carry a [CLS] pooler that sentence embeddings never use; frozen, it is kept in the
        # saved weights unchanged and DDP does not wait for gradients that never come.
        if isinstance(getattr(model, "pooler", None), nn.Module):
            model.pooler.requires_grad_(False)
        # Embedding never generates, so a decoder's key-value cache would only hold memory.
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False
        # Training batches packed into rows (embedlab.modeling.packing); set by SentenceEncoder.from_pretrained.
        self.sequence_packing = False

    @property
    def output_dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def tokenize(self) -> Tokenize:
        return Tokenize(self.tokenizer, self.max_seq_length, self.do_lower_case)

    @property
    def trained_token_table(self) -> nn.Embedding | None:
        """The word-embedding table, when it trains and the model takes looked-up vectors (`inputs_embeds`) in place
        of token ids."""
        table = self.model.get_input_embeddings()
        if self.takes_token_vectors and isinstance(table, nn.Embedding) and table.weight.requires_grad:
            return table
        return None

    def forward(self, features: dict) -> dict:
        inputs = {key: features[key] for key in self.model_inputs if key in features}
        if TOKEN_VECTORS in features:
            inputs = {**{key: value for key, value in inputs.items() if key != "input_ids"},
                      "inputs_embeds": features[TOKEN_VECTORS]}
        return {**features, "token_embeddings": self.model(**inputs).last_hidden_state}

    @property
    def packs_sequences(self) -> bool:
        return self.sequence_packing and supports_packing(self.model)

    def packed_token_embeddings(self, columns: list[dict]) -> list[Tensor]:
        """The token embeddings of each of a batch's columns, from one forward pass over the batch's texts packed into
        rows."""
        packed = pack_columns(columns, tuple(key for key in self.model_inputs if key != "attention_mask"))
        return packed.unpack(self.model(**packed.inputs).last_hidden_state)

    @classmethod
    def load(cls, location: str, trust_remote_code: bool = False) -> "Backbone":
        """A sentence-transformers Transformer folder, a plain Hugging Face checkpoint or a PEFT adapter folder (whose
        adapter transformers applies to the base model it names)."""
        base = adapter_base(Path(location))
        model, tokenizer = load_pretrained(base or location, AutoModel, trust_remote_code, tokenizer_location=location)
        if base is not None:
            model = load_adapter(model, Path(location))
        prepare_tokenizer(tokenizer, location)
        saved_file = Path(location) / BACKBONE_CONFIG
        saved = read_json(saved_file) if saved_file.is_file() else {}
        task = saved.get("transformer_task", "feature-extraction")
        if task != "feature-extraction":
            raise ConfigError(f"{saved_file}: transformer_task '{task}' is not supported (only feature-extraction)")
        length = saved.get("max_seq_length") or default_max_seq_length(model, tokenizer)
        return cls(model, tokenizer, int(length), bool(saved.get("do_lower_case", False)))

    def save(self, folder: Path, merge_adapter: bool = False) -> None:
        model = merged(self.model) if merge_adapter else self.model
        model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        write_json(folder / BACKBONE_CONFIG, {"max_seq_length": self.max_seq_length,
                                              "do_lower_case": self.do_lower_case})


# The Pooling config's flag spelling that every sentence-transformers release reads (5+ also reads `pooling_mode`).
POOLING_FLAGS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
                 "mean": "pooling_mode_mean_tokens", "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                 "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


class Pooling(nn.Module):
    def __init__(self, dim: int, mode: str = "mean"):
        super().__init__()
        self.dim = dim
        self.mode = checked_mode(mode)

    @property
    def output_dim(self) -> int:
        return self.dim

    def forward(self, features: dict) -> dict:
        embedding = pool(features["token_embeddings"], features["attention_mask"], self.mode)
        return {**features, SENTENCE_EMBEDDING: embedding}

    @classmethod
    def load(cls, folder: Path) -> "Pooling":
        config = read_json(folder / MODULE_CONFIG)
        if config.get("include_prompt") is False:
            raise ConfigError(f"{folder / MODULE_CONFIG}: pooling without the prompt's tokens (include_prompt=false) "
                              "is not supported")
        modes = config.get("pooling_mode") or [mode for mode, flag in POOLING_FLAGS.items() if config.get(flag)]
        modes = [modes] if isinstance(modes, str) else modes
        if len(modes) != 1:
            raise ConfigError(f"{folder / MODULE_CONFIG}: pooling modes {modes or 'none'} are not supported; one of "
                              f"{', '.join(POOLING_MODES)} is")
        return cls(config.get("embedding_dimension") or config["word_embedding_dimension"], modes[0])

    def save(self, folder: Path) -> None:
        write_json(folder / MODULE_CONFIG, {"word_embedding_dimension": self.dim,
                                            **{flag: mode == self.mode for mode, flag in POOLING_FLAGS.items()}})


class Dense(nn.Module):
    """A linear layer and an activation, optionally with a residual connection, over one feature."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: nn.Module | None = None,
                 input_name: str = SENTENCE_EMBEDDING, output_name: str | None = None, use_residual: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = nn.Tanh() if activation is None else activation
        self.input_name = input_name
        self.output_name = output_name or input_name
        self.use_residual = use_residual
        if use_residual and in_features != out_features:
            self.residual = nn.Linear(in_features, out_features, bias=False)

    @property
    def output_dim(self) -> int:
        return self.linear.out_features

    def forward(self, features: dict) -> dict:
        x = features[self.input_name]
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (self.residual(x) if hasattr(self, "residual") else x)
        return {**features, self.output_name: out}

    @classmethod
    def load(cls, folder: Path) -> "Dense":
        config = read_json(folder / MODULE_CONFIG)
        dense = cls(config["in_features"], config["out_features"], bias=config.get("bias", True),
                    activation=_activation(config.get("activation_function", "torch.nn.modules.activation.Tanh"),
                                           folder),
                    input_name=config.get("module_input_name", SENTENCE_EMBEDDING),
                    output_name=config.get("module_output_name"), use_residual=config.get("use_residual", False))
        dense.load_state_dict(_read_weights(folder))
        return dense

    def save(self, folder: Path) -> None:
        activation = type(self.activation)
        config = {"in_features": self.linear.in_features, "out_features": self.linear.out_features,
                  "bias": self.linear.bias is not None,
                  "activation_function": f"{activation.__module__}.{activation.__qualname__}"}
        # Keys at their defaults are left out: releases before sentence-transformers 5 refuse unknown keys.
        config.update(_non_default_names(self.input_name, self.output_name))
        if self.use_residual:
            config["use_residual"] = True
        write_json(folder / MODULE_CONFIG, config)
        save_file(self.state_dict(), folder / WEIGHTS_FILE)


class Normalize(nn.Module):
    def __init__(self, input_name: str = SENTENCE_EMBEDDING, output_name: str | None = None):
        super().__init__()
        self.input_name = input_name
        self.output_name = output_name or input_name

    def forward(self, features: dict) -> dict:
        return {**features, self.output_name: F.normalize(features[self.input_name], p=2, dim=-1)}

    @classmethod
    def load(cls, folder: Path) -> "Normalize":
        # Releases before sentence-transformers 5 write an empty folder.
        config_file = folder / MODULE_CONFIG
        config = read_json(config_file) if config_file.is_file() else {}
        return cls(config.get("module_input_name", SENTENCE_EMBEDDING), config.get("module_output_name"))

    def save(self, folder: Path) -> None:
        names = _non_default_names(self.input_name, self.output_name)
        if names:
            write_json(folder / MODULE_CONFIG, names)


class StaticEmbedding(nn.Module):
    """The mean of trained per-token vectors (sentence-transformers' StaticEmbedding, model2vec's models): no
    attention, so it embeds at a fraction of a transformer's cost."""

    TOKENIZER_FILE = "tokenizer.json"

    def __init__(self, tokenizer, weights: Tensor):
        super().__init__()
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.embedding = nn.EmbeddingBag.from_pretrained(weights, freeze=False)

    @property
    def output_dim(self) -> int:
        return self.embedding.embedding_dim

    @property
    def tokenize(self) -> StaticTokenize:
        return StaticTokenize(self.tokenizer)

    def forward(self, features: dict) -> dict:
        return {**features, SENTENCE_EMBEDDING: self.embedding(features["input_ids"], features["offsets"])}

    @classmethod
    def load(cls, folder: Path) -> "StaticEmbedding":
        from tokenizers import Tokenizer

        weights = _read_weights(folder)
        if "embedding.weight" not in weights:
            raise ConfigError(f"{folder}: a StaticEmbedding's weights need 'embedding.weight', found {sorted(weights)}")
        return cls(Tokenizer.from_file(str(folder / cls.TOKENIZER_FILE)), weights["embedding.weight"])

    def save(self, folder: Path) -> None:
        save_file(self.state_dict(), folder / WEIGHTS_FILE)
        self.tokenizer.save(str(folder / self.TOKENIZER_FILE))


class Router(nn.Module):
    """Separate chains for separate roles (a light query encoder and a heavy document encoder, say).

    The route is chosen as sentence-transformers chooses it, by task ("query", "document", or none) for text:
    the route mappings (task and modality, then task, then modality, then neither), then a route named after the
    task, then the default route.
    """

    MODALITY = "text"

    def __init__(self, routes: dict[str, list[nn.Module]], default_route: str | None = None,
                 route_mappings: dict[tuple, str] | None = None, allow_empty_key: bool = True):
        super().__init__()
        self.routes = nn.ModuleDict({name: nn.Sequential(*modules) for name, modules in routes.items()})
        self.route_mappings = dict(route_mappings or {})
        for target in [default_route, *self.route_mappings.values()]:
            if target is not None and target not in self.routes:
                raise ConfigError(f"router route '{target}' is not one of its routes {sorted(self.routes)}")
        self.allow_empty_key = allow_empty_key
        self.default_route = default_route if default_route or not allow_empty_key else next(iter(self.routes))

    @property
    def output_dim(self) -> int:
        return chain_output_dim(self.routes[self.route_for(None)])

    def route_for(self, task: str | None) -> str:
        for key in ((task, self.MODALITY), (task, None), (None, self.MODALITY), (None, None)):
            if key in self.route_mappings:
                return self.route_mappings[key]
        for name in (task, self.MODALITY):
            if name in self.routes:
                return name
        if task is not None:
            raise ConfigError(f"the model's router has no route for task '{task}' (routes: {sorted(self.routes)})")
        if self.default_route is None:
            raise ConfigError(f"the model's router has no default route; encode with a task "
                              f"(routes: {sorted(self.routes)})")
        return self.default_route

    def tokenize_for(self, task: str | None) -> RoutedTokenize:
        return RoutedTokenize({name: route[0].tokenize for name, route in self.routes.items()}, self.route_for(task))

    @property
    def tokenize(self) -> RoutedTokenize:
        return self.tokenize_for(None)

    def forward(self, features: dict) -> dict:
        return self.routes[features["route"]](features)


def chain_output_dim(modules) -> int:
    """The size of the embedding a chain of modules ends with: that of its last module that sets one."""
    return next(module.output_dim for module in reversed(list(modules)) if hasattr(module, "output_dim"))


def backbones(modules) -> list[Backbone]:
    """Every Backbone in a chain, those inside a Router's routes too."""
    return [module for module in _all_modules(modules) if isinstance(module, Backbone)]


def poolings(modules) -> list[Pooling]:
    return [module for module in _all_modules(modules) if isinstance(module, Pooling)]


def _all_modules(modules) -> list[nn.Module]:
    found = []
    for module in modules:
        found.append(module)
        if isinstance(module, Router):
            for route in module.routes.values():
                found.extend(_all_modules(route))
    return found


def _activation(name: str, folder: Path) -> nn.Module:
    """The activation a Dense config names; only torch's own modules load, since a name is code to import."""
    module_name, _, class_name = name.rpartition(".")
    activation = getattr(importlib.import_module(module_name), class_name, None) if module_name.startswith(
        "torch.") else None
    if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
        raise ConfigError(f"{folder / MODULE_CONFIG}: activation_function '{name}' is not a torch.nn module")
    return activation()


def _read_weights(folder: Path) -> dict[str, Tensor]:
    if (folder / WEIGHTS_FILE).is_file():
        return load_file(folder / WEIGHTS_FILE)
    legacy = folder / "pytorch_model.bin"
    if not legacy.is_file():
        raise ConfigError(f"{folder}: no {WEIGHTS_FILE} or pytorch_model.bin")
    return torch.load(legacy, map_location="cpu", weights_only=True)


def _non_default_names(input_name: str, output_name: str) -> dict[str, str]:
    if input_name == SENTENCE_EMBEDDING and output_name == SENTENCE_EMBEDDING:
        return {}
    return {"module_input_name": input_name, "module_output_name": output_name}
