"""PEFT adapters (LoRA and the other methods of the `peft` library) on a backbone: only the adapter trains.

A backbone with an adapter saves in PEFT's layout (adapter_config.json naming the base model, and the adapter's
weights), the layout that sentence-transformers' PEFT integration loads; `merged` folds the adapter into a copy
of the base weights for a folder that needs no base model.
"""

import copy
import json
from pathlib import Path

from torch import nn

from embedlab.errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"


def attach_adapter(model: nn.Module, config) -> nn.Module:
    """`model` wrapped with a fresh adapter of `config` (a `peft.PeftConfig`); every base weight is frozen."""
    from peft import PeftConfig, get_peft_model

    if not isinstance(config, PeftConfig):
        raise ConfigError(f"adapter must be a peft config (adapter._target_=peft.LoraConfig, ...), got "
                          f"{type(config).__name__}")
    if has_adapter(model):
        raise ConfigError("the backbone already has an adapter; train it as it is, without +adapter")
    try:
        return get_peft_model(model, config)
    except ValueError as error:  # peft's words for a target module the model does not have
        raise ConfigError(f"adapter: {error}") from error


def has_adapter(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merged(model: nn.Module) -> nn.Module:
    """A copy of `model` with its adapter merged into the base weights (`model` itself when it has none)."""
    return copy.deepcopy(model).merge_and_unload() if has_adapter(model) else model


def adapter_base(folder: Path) -> str | None:
    """The base model an adapter folder names, or None when the folder holds no adapter."""
    config_file = folder / ADAPTER_CONFIG
    return json.loads(config_file.read_text())["base_model_name_or_path"] if config_file.is_file() else None


def load_adapter(model: nn.Module, folder: Path) -> nn.Module:
    """The base `model` with the adapter saved in `folder`, trainable as when it was saved."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, folder, is_trainable=True)
