"""Dropout whose masks are cheap to draw on the CPU (`backbone.dropout_masks=packed`, the training default).

torch's CPU dropout draws one Bernoulli sample per element, and in a MiniLM training step on the CPU those draws
cost more than the attention. Here one 64-bit draw from torch's seeded generator decides four elements, 16 bits
each, so the drop probability is p rounded to a multiple of 1/65536 (0.1 becomes 0.1000061), and the kept
elements are scaled by the inverse of the rounded keep probability, so that the expected output is the input.
Seeded runs repeat, and a checkpoint's generator state resumes the same masks. On other devices, where torch's
dropout is already cheap, and in eval mode, it is torch's dropout. (Attention-probability dropout happens inside
scaled dot-product attention, which draws its own masks.)
"""

import math

import torch
from torch import Tensor, nn

from embedlab.errors import ConfigError

DROPOUT_MASKS = ("packed", "torch")
LEVELS = 1 << 16


class PackedMaskDropout(nn.Dropout):
    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or input.device.type != "cpu":
            return super().forward(input)
        return input * keep_mask(input.shape, self.p, input.dtype)


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> Tensor:
    """0 where an element drops, 1 / (keep probability) where it stays, with the drop probability `p` rounded to a
    multiple of 1/65536."""
    count = math.prod(shape)
    dropped_levels = round(p * LEVELS)
    if dropped_levels >= LEVELS:
        return torch.zeros(shape, dtype=dtype)
    draws = torch.randint(-(1 << 63), (1 << 63) - 1, ((count + 3) // 4,), dtype=torch.int64)
    levels = draws.view(torch.int16)[:count].view(shape)
    keep = levels >= dropped_levels - LEVELS // 2
    return keep.to(dtype).mul_(LEVELS / (LEVELS - dropped_levels))


def use_dropout_masks(model: nn.Module, masks: str) -> None:
    """Give every torch dropout layer of `model` the mask drawing `masks` names ("packed" or "torch")."""
    if masks not in DROPOUT_MASKS:
        raise ConfigError(f"backbone.dropout_masks must be one of {', '.join(DROPOUT_MASKS)}, got {masks!r}")
    kind = PackedMaskDropout if masks == "packed" else nn.Dropout
    for module in model.modules():
        # Switching the class keeps each layer's p, its place in the model and anything that holds it.
        if type(module) in (nn.Dropout, PackedMaskDropout):
            module.__class__ = kind
