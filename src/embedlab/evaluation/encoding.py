"""What every evaluator asks of a model, and encoding each distinct text once."""

from typing import Protocol

import torch


class TextEncoder(Protocol):
    """`SentenceEncoder` satisfies this; so does anything else that embeds a list of texts into a CPU tensor."""

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor: ...


# Metrics are numbers; a few entries describe the setting instead (latency/device, latency/torch_version).
Metrics = dict[str, float | int | str]


class Evaluator(Protocol):
    """An evaluation: scores a model and returns metrics keyed "<dataset>/<metric>"."""

    name: str

    def __call__(self, encoder: TextEncoder) -> Metrics: ...


def encode_unique(encoder: TextEncoder, texts: list[str], batch_size: int,
                  show_progress_bar: bool = True) -> torch.Tensor:
    """Embeddings of `texts` in order, each distinct text encoded once (STS and pair sets repeat sentences)."""
    distinct = list(dict.fromkeys(texts))
    position = {text: index for index, text in enumerate(distinct)}
    embeddings = encoder.encode(distinct, batch_size=batch_size, show_progress_bar=show_progress_bar)
    return embeddings[torch.tensor([position[text] for text in texts], dtype=torch.long)]
