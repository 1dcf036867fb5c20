"""Semantic textual similarity: how well a model's similarity of each pair follows the gold scores.

Reports Spearman and Pearson correlations for up to four similarities of the two embeddings: cosine, dot product,
and the negated Euclidean and Manhattan distances (negated so that for all four, larger means more similar).
`correlations` is the one implementation of the metric: the cross-encoder's STS evaluator uses it too.
"""

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from embedlab.errors import ConfigError, DataError
from embedlab.evaluation.datasets import ScoredPairs
from embedlab.evaluation.encoding import (
    EmbeddingEvaluator,
    Metrics,
    distinct,
    keyed,
    positions_of,
)

log = logging.getLogger(__name__)
MEASURES = ("cosine", "dot", "euclidean", "manhattan")


def pairwise_similarities(first: torch.Tensor, second: torch.Tensor,
                          measures: Sequence[str] = MEASURES) -> dict[str, torch.Tensor]:
    """The similarity of each row of `first` with the same row of `second`, by each measure."""
    first, second = first.double(), second.double()
    every = {
        "cosine": lambda: F.cosine_similarity(first, second, dim=-1),
        "dot": lambda: (first * second).sum(dim=-1),
        "euclidean": lambda: -(first - second).norm(p=2, dim=-1),
        "manhattan": lambda: -(first - second).abs().sum(dim=-1),
    }
    return {measure: every[measure]() for measure in measures}


def correlations(similarities: dict[str, torch.Tensor], gold: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson of each similarity against the gold scores: keys like `spearman_cosine`, or plain
    `spearman` and `pearson` for a similarity named ""."""
    metrics = {}
    for measure, values in similarities.items():
        predicted = values.double().numpy()
        suffix = f"_{measure}" if measure else ""
        metrics[f"spearman{suffix}"] = float(spearmanr(predicted, gold).statistic)
        metrics[f"pearson{suffix}"] = float(pearsonr(predicted, gold).statistic)
    return metrics


def split_by_gold(values: torch.Tensor, gold: Sequence[float]) -> dict[str, list[float]]:
    """The values of pairs in the upper half of the gold scale ("positive") and of the others ("negative")."""
    middle = (min(gold) + max(gold)) / 2
    upper = torch.tensor([score >= middle for score in gold])
    return {"positive": values[upper].tolist(), "negative": values[~upper].tolist()}


class STSEvaluator(EmbeddingEvaluator):
    """Scores one STS set; keys "<name>/spearman_cosine", "<name>/pearson_manhattan", ... for each of `measures`.

    After a run, `pair_similarities` holds the pairs' cosines split at the middle of the gold scale.
    """

    main_metric = "spearman_cosine"

    def __init__(self, name: str, pairs: ScoredPairs, batch_size: int = 32, measures: Sequence[str] = MEASURES):
        if len(pairs) < 2:
            raise DataError(f"STS set {name!r} needs at least two pairs to correlate, got {len(pairs)}")
        unknown = sorted(set(measures) - set(MEASURES))
        if unknown or not measures:
            raise ConfigError(f"STS measures must be some of {', '.join(MEASURES)}, got {list(measures)}")
        self.name = name
        self.pairs = pairs
        self.batch_size = batch_size
        self.measures = list(measures)
        self.inputs = distinct([(None, text) for text in pairs.sentence1 + pairs.sentence2])
        self.pair_similarities: dict[str, list[float]] = {}

    def score(self, embeddings: torch.Tensor) -> Metrics:
        log.info("%s: %d pairs", self.name, len(self.pairs))
        first = embeddings[positions_of([(None, text) for text in self.pairs.sentence1], self.inputs)]
        second = embeddings[positions_of([(None, text) for text in self.pairs.sentence2], self.inputs)]
        similarities = pairwise_similarities(first, second, self.measures)
        cosines = similarities.get("cosine", F.cosine_similarity(first.double(), second.double(), dim=-1))
        self.pair_similarities = split_by_gold(cosines, self.pairs.scores)
        return keyed(self.name, correlations(similarities, self.pairs.scores))
