"""Pair classification (NLI entailment, question entailment, duplicates): is a pair positive?

The bi-encoder's answer is its cosine against a threshold. The thresholds are chosen on the train split, one for
the best accuracy and one for the best F1, then applied unchanged to the test split. A cross-encoder, when given,
is scored on the same test pairs from its own predictions.
"""

import logging

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_average_precision,
    binary_f1_score,
    binary_precision,
    binary_recall,
    multiclass_accuracy,
    multiclass_f1_score,
)

from embedlab.evaluation.cross_encoder import CrossEncoderScorer
from embedlab.evaluation.datasets import LabelledPairs
from embedlab.evaluation.encoding import (
    EmbeddingEvaluator,
    Metrics,
    distinct,
    keyed,
    positions_of,
)

log = logging.getLogger(__name__)
THRESHOLD_OBJECTIVES = ("accuracy", "f1")


def best_threshold(scores: torch.Tensor, labels: torch.Tensor, objective: str) -> tuple[float, float]:
    """The threshold t maximising `objective` (accuracy or F1) of "positive iff score > t", and that maximum.

    Every distinct cut of the sorted scores is tried: t lies halfway between neighbouring distinct scores, or
    below the lowest (all positive) or above the highest (all negative).
    """
    if objective not in THRESHOLD_OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(THRESHOLD_OBJECTIVES)}, got {objective!r}")
    order = scores.double().argsort(descending=True)
    ranked, positive = scores.double()[order], labels[order].double()
    total, positives = len(ranked), positive.sum()
    # Cut i predicts the top i scores positive, for i = 0 .. total.
    true_positives = torch.cat([torch.zeros(1, dtype=torch.float64), positive.cumsum(0)])
    predicted = torch.arange(total + 1, dtype=torch.float64)
    false_positives = predicted - true_positives
    if objective == "accuracy":
        values = (true_positives + (total - positives - false_positives)) / total
    else:
        values = 2 * true_positives / (predicted + positives).clamp(min=1)
    # A cut between equal scores cannot be made by any threshold.
    valid = torch.ones(total + 1, dtype=torch.bool)
    valid[1:total] = ranked[:-1] > ranked[1:]
    values = torch.where(valid, values, torch.tensor(float("-inf"), dtype=torch.float64))
    cut = int(values.argmax())
    if cut == 0:
        threshold = float(ranked[0]) + 1.0
    elif cut == total:
        threshold = float(ranked[-1]) - 1.0
    else:
        threshold = float(ranked[cut - 1] + ranked[cut]) / 2
    return threshold, float(values[cut])


def classification_metrics(predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, F1, precision and recall of 0/1 predictions."""
    predictions, labels = predictions.long(), labels.long()
    return {"accuracy": float(binary_accuracy(predictions, labels)),
            "f1": float(binary_f1_score(predictions, labels)),
            "precision": float(binary_precision(predictions, labels)),
            "recall": float(binary_recall(predictions, labels))}


def multiclass_metrics(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-averaged F1 of class predictions."""
    predictions, labels = predictions.long(), labels.long()
    return {"accuracy": float(multiclass_accuracy(predictions, labels, num_classes, average="micro")),
            "f1": float(multiclass_f1_score(predictions, labels, num_classes, average="macro"))}


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    # torchmetrics squashes scores outside [0, 1] through a sigmoid; being monotonic, that leaves AP unchanged.
    return float(binary_average_precision(scores.float(), labels.long()))


class PairClassificationEvaluator(EmbeddingEvaluator):
    """Keys "<name>/accuracy" (at the train split's accuracy threshold), "<name>/f1", "<name>/precision" and
    "<name>/recall" (at its F1 threshold), "<name>/average_precision", the two thresholds, and with a cross-encoder
    (`cross_encoder_path`, see CrossEncoderScorer) "<name>/cross_encoder_accuracy", "_f1" and "_average_precision".

    After a run, `pair_similarities` holds the test cosines of the positive and the negative pairs.
    """

    main_metric = "accuracy"

    def __init__(self, name: str, train: LabelledPairs, test: LabelledPairs, batch_size: int = 32,
                 cross_encoder_path: str | None = None, cross_encoder_positive_label: str | int = 1):
        self.name = name
        self.train = train
        self.test = test
        self.batch_size = batch_size
        self.cross_encoder = (CrossEncoderScorer(cross_encoder_path, cross_encoder_positive_label, batch_size)
                              if cross_encoder_path else None)
        self.inputs = distinct([(None, text) for pairs in (train, test) for text in pairs.sentence1 + pairs.sentence2])
        self.pair_similarities: dict[str, list[float]] = {}

    def score(self, embeddings: torch.Tensor) -> Metrics:
        log.info("%s: thresholds from %d train pairs, scored on %d test pairs", self.name, len(self.train),
                 len(self.test))
        train_scores, test_scores = (self._cosines(embeddings, pairs) for pairs in (self.train, self.test))
        train_labels, test_labels = torch.tensor(self.train.labels), torch.tensor(self.test.labels)
        accuracy_threshold, _ = best_threshold(train_scores, train_labels, "accuracy")
        f1_threshold, _ = best_threshold(train_scores, train_labels, "f1")
        at_f1 = classification_metrics(test_scores > f1_threshold, test_labels)
        metrics = {
            "accuracy": classification_metrics(test_scores > accuracy_threshold, test_labels)["accuracy"],
            "f1": at_f1["f1"], "precision": at_f1["precision"], "recall": at_f1["recall"],
            "average_precision": average_precision(test_scores, test_labels),
            "accuracy_threshold": accuracy_threshold, "f1_threshold": f1_threshold,
        }
        if self.cross_encoder is not None:
            probabilities, predictions = self.cross_encoder.predict(self.test.sentence1, self.test.sentence2)
            cross = classification_metrics(predictions, test_labels)
            metrics.update(cross_encoder_accuracy=cross["accuracy"], cross_encoder_f1=cross["f1"],
                           cross_encoder_average_precision=average_precision(probabilities, test_labels))
        self.pair_similarities = {"positive": test_scores[test_labels == 1].tolist(),
                                  "negative": test_scores[test_labels == 0].tolist()}
        return keyed(self.name, metrics)

    def _cosines(self, embeddings: torch.Tensor, pairs: LabelledPairs) -> torch.Tensor:
        first = embeddings[positions_of([(None, text) for text in pairs.sentence1], self.inputs)]
        second = embeddings[positions_of([(None, text) for text in pairs.sentence2], self.inputs)]
        return F.cosine_similarity(first.double(), second.double(), dim=-1)
