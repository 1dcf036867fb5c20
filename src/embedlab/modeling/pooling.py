"""Token embeddings to one sentence embedding."""

import torch
from torch import Tensor

POOLING_MODES = ("mean", "cls", "max")


def pool(token_embeddings: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    if mode == "cls":
        # The first attended token: position 0 with right padding, the first real token with left padding.
        first = attention_mask.to(torch.int).argmax(dim=1)
        return token_embeddings[torch.arange(token_embeddings.shape[0], device=token_embeddings.device), first]
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode == "mean":
        summed = (token_embeddings * mask).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1e-9)
    if mode == "max":
        # Padding must never win the max, so it is pushed far below any real activation.
        masked = token_embeddings.masked_fill(mask == 0, -1e9)
        return masked.max(dim=1).values
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {POOLING_MODES}")
