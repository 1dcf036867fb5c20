"""Token embeddings to one sentence embedding: every mode of sentence-transformers' Pooling module."""

import torch
from torch import Tensor

from embedlab.errors import ConfigError

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def checked_mode(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ConfigError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {mode!r}")
    return mode


def pool(token_embeddings: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Pool over the attended tokens; padding may sit on either side."""
    rows = torch.arange(token_embeddings.shape[0], device=token_embeddings.device)
    if mode == "cls":
        # The first attended token: position 0 with right padding, the first real token with left padding.
        return token_embeddings[rows, first_real_token(attention_mask)]
    if mode == "lasttoken":
        return token_embeddings[rows, last_real_token(attention_mask)]
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        summed = (token_embeddings * mask).sum(dim=1)
        count = mask.sum(dim=1).clamp(min=1e-9)
        return summed / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":
        # Weights 1, 2, 3, ... from the first real token on, so left padding shifts nothing.
        positions = torch.arange(1, token_embeddings.shape[1] + 1, device=token_embeddings.device)
        weights = (positions - first_real_token(attention_mask).unsqueeze(1)).unsqueeze(-1) * mask
        return (token_embeddings * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if mode == "max":
        # Padding must never win the max, so it is pushed far below any real activation.
        masked = token_embeddings.masked_fill(mask == 0, -1e9)
        return masked.max(dim=1).values
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {POOLING_MODES}")


def first_real_token(attention_mask: Tensor) -> Tensor:
    return attention_mask.to(torch.int).argmax(dim=1)


def last_real_token(attention_mask: Tensor) -> Tensor:
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.to(torch.int).flip(dims=[1]).argmax(dim=1)
