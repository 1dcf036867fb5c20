"""Weight-space ensembling of a fine-tuned model with the model it started from (WiSE-FT): each weight becomes
(1 - share) * fine-tuned + share * starting. Fine-tuning on one domain's pairs narrows a model; moving part of the
way back keeps most of the in-domain gain and much of what the starting model knew elsewhere."""

import torch
from torch import nn

from embedlab.errors import ConfigError


@torch.no_grad()
def interpolate_weights(model: nn.Module, start: nn.Module, share: float) -> None:
    """Move `model`'s floating-point weights `share` of the way to `start`'s, in place, name by name."""
    start_weights = start.state_dict()
    for name, weight in model.state_dict().items():
        if not weight.is_floating_point():
            continue
        if name not in start_weights or start_weights[name].shape != weight.shape:
            raise ConfigError(f"merge_with_start: the starting model has no weight {name} of shape "
                              f"{tuple(weight.shape)}; it is not the model this one was trained from")
        weight.lerp_(start_weights[name].to(weight.device, weight.dtype), share)
