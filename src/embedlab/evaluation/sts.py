"""Semantic textual similarity: how well a model's similarity of each pair follows the gold scores.

Reports Spearman and Pearson correlations for four similarities of the two embeddings: cosine, dot product, and
the negated Euclidean and Manhattan distances (negated so that for all four, larger means more similar).
"""

import logging

import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from embedlab.evaluation.datasets import ScoredPairs
from embedlab.evaluation.encoding import TextEncoder, encode_unique

log = logging.getLogger(__name__)


def pairwise_similarities(first: torch.Tensor, second: torch.Tensor) -> dict[str, torch.Tensor]:
    """The similarity of each row of `first` with the same row of `second`, by four measures."""
    first, second = first.double(), second.double()
    return {
        "cosine": F.cosine_similarity(first, second, dim=-1),
        "dot": (first * second).sum(dim=-1),
        "euclidean": -(first - second).norm(p=2, dim=-1),
        "manhattan": -(first - second).abs().sum(dim=-1),
    }


def correlations(similarities: dict[str, torch.Tensor], gold: list[float]) -> dict[str, float]:
    """Spearman and Pearson of each similarity against the gold scores: keys like `spearman_cosine`."""
    metrics = {}
    for measure, values in similarities.items():
        predicted = values.numpy()
        metrics[f"spearman_{measure}"] = float(spearmanr(predicted, gold).statistic)
        metrics[f"pearson_{measure}"] = float(pearsonr(predicted, gold).statistic)
    return metrics


class STSEvaluator:
    """Scores one STS set; keys "<name>/spearman_cosine", "<name>/pearson_manhattan", ..."""

    def __init__(self, name: str, pairs: ScoredPairs, batch_size: int = 32):
        if len(pairs) < 2:
            raise ValueError(f"STS set {name!r} needs at least two pairs to correlate, got {len(pairs)}")
        self.name = name
        self.pairs = pairs
        self.batch_size = batch_size

    def __call__(self, encoder: TextEncoder) -> dict[str, float]:
        log.info("%s: %d pairs", self.name, len(self.pairs))
        embeddings = encode_unique(encoder, self.pairs.sentence1 + self.pairs.sentence2, self.batch_size)
        first, second = embeddings[:len(self.pairs)], embeddings[len(self.pairs):]
        metrics = correlations(pairwise_similarities(first, second), self.pairs.scores)
        return {f"{self.name}/{metric}": value for metric, value in metrics.items()}
