"""Inference over many inputs in batches of similar length, returned in the caller's order."""

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm.auto import tqdm


def in_length_order(items: Sequence, length: Callable[[object], int], batch_size: int,
                    run_batch: Callable[[list], torch.Tensor], description: str,
                    show_progress_bar: bool = False, streams: int = 1) -> torch.Tensor | None:
    """`run_batch` over batches of `items`, longest first so that little compute goes to padding.

    With `streams` > 1 that many batches run at once, each in its own thread: for a runtime whose calls release the
    GIL, single-threaded calls side by side keep the cores busier than one call split across them.
    Returns the rows of all batches concatenated in the order of `items`, or None when there are no items.
    """
    order = sorted(range(len(items)), key=lambda i: -length(items[i]))
    batches = [[items[i] for i in order[start:start + batch_size]] for start in range(0, len(order), batch_size)]
    progress = {"desc": description, "disable": not show_progress_bar, "total": len(batches)}
    if streams > 1:
        with ThreadPoolExecutor(streams) as pool:
            chunks = list(tqdm(pool.map(run_batch, batches), **progress))
    else:
        chunks = [run_batch(batch) for batch in tqdm(batches, **progress)]
    if not chunks:
        return None
    outputs = torch.cat(chunks)
    restored = torch.empty_like(outputs)
    restored[torch.tensor(order)] = outputs
    return restored
