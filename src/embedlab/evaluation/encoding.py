"""What every evaluator asks of a model, and embedding each distinct input once.

An evaluator is named "<split>/<dataset>" ("test/stsb", "dev/medquad") and its metrics are keyed
"<split>/<dataset>/<metric>", the one spelling that training, `scripts/evaluate.py` and the report share.
Evaluators that can also run during training state what they need from the model: their distinct `inputs`, and
`score(outputs)` from the model's output for each input (`consumes`: "embeddings" from a bi-encoder, or
"pair_scores" from a cross-encoder).
"""

from collections.abc import Sequence
from typing import ClassVar, Protocol

import torch

# A text to embed and its role: "query", "document", or None. The role chooses the model's prompt, if it has one.
Input = tuple[str | None, str]
# Metrics are numbers; a few entries describe the setting instead (latency/device, latency/torch_version).
Metrics = dict[str, float | int | str]
SPLITS = ("dev", "test")


class TextEncoder(Protocol):
    """`SentenceEncoder` satisfies this; so does anything else that embeds a list of texts into a CPU tensor."""

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False,
               prompt_name: str | None = None) -> torch.Tensor: ...


class Evaluator(Protocol):
    """Scores a model and returns metrics keyed "<name>/<metric>"."""

    name: str
    main_metric: str

    def __call__(self, model) -> Metrics: ...


class EmbeddingEvaluator:
    """An evaluator over the embeddings of its `inputs`; subclasses set `name`, `main_metric`, `inputs`,
    `batch_size` and define `score`. Calling it embeds the inputs with the given encoder and scores them."""

    consumes: ClassVar[str] = "embeddings"
    name: str
    main_metric: str
    inputs: list[Input]
    batch_size: int = 32

    def score(self, embeddings: torch.Tensor) -> Metrics:
        raise NotImplementedError

    def __call__(self, encoder: TextEncoder) -> Metrics:
        return self.score(encode_inputs(encoder, self.inputs, self.batch_size))


def encode_inputs(encoder: TextEncoder, inputs: Sequence[Input], batch_size: int,
                  show_progress_bar: bool = True) -> torch.Tensor:
    """Embeddings of `inputs` in order; the texts of each role are encoded together, with that role's prompt."""
    if not inputs:
        raise ValueError("nothing to encode")
    by_role: dict[str | None, list[int]] = {}
    for position, (role, _) in enumerate(inputs):
        by_role.setdefault(role, []).append(position)
    embeddings = None
    for role, positions in by_role.items():
        texts = [inputs[position][1] for position in positions]
        prompt = {} if role is None else {"prompt_name": role}
        encoded = encoder.encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar, **prompt)
        if embeddings is None:
            embeddings = torch.empty(len(inputs), encoded.shape[-1], dtype=encoded.dtype)
        embeddings[torch.tensor(positions)] = encoded
    return embeddings


def distinct(inputs: Sequence) -> list:
    """The inputs in first-seen order, each once (STS and pair sets repeat sentences)."""
    return list(dict.fromkeys(inputs))


def positions_of(items: Sequence, among: Sequence) -> torch.Tensor:
    """The index in `among` of each item."""
    position = {item: index for index, item in enumerate(among)}
    return torch.tensor([position[item] for item in items], dtype=torch.long)


def keyed(name: str, metrics: Metrics) -> Metrics:
    return {f"{name}/{metric}": value for metric, value in metrics.items()}


def split_of(name: str) -> str:
    """The split an evaluator's name starts with, "dev" or "test"."""
    return name.split("/", 1)[0]
