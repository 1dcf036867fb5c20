"""Inference over many inputs in batches of similar length, returned in the caller's order."""

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm


def in_length_order(items: Sequence, length: Callable[[object], int], batch_size: int,
                    run_batch: Callable[[list], torch.Tensor], description: str,
                    show_progress_bar: bool = False) -> torch.Tensor | None:
    """`run_batch` over batches of `items`, longest first so that little compute goes to padding.

    Returns the rows of all batches concatenated in the order of `items`, or None when there are no items.
    """
    order = sorted(range(len(items)), key=lambda i: -length(items[i]))
    chunks = [run_batch([items[i] for i in order[start:start + batch_size]])
              for start in tqdm(range(0, len(order), batch_size), desc=description, disable=not show_progress_bar)]
    if not chunks:
        return None
    outputs = torch.cat(chunks)
    restored = torch.empty_like(outputs)
    restored[torch.tensor(order)] = outputs
    return restored
