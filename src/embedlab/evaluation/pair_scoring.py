"""Evaluators of a cross-encoder, which scores each (first, second) pair jointly: STS correlations of its scores,
and the accuracy and macro F1 of its classes. The metrics are the ones bi-encoders are scored with."""

from typing import ClassVar

import torch

from embedlab.evaluation.classification import multiclass_metrics
from embedlab.evaluation.datasets import ClassifiedPairs, ScoredPairs
from embedlab.evaluation.encoding import Metrics, keyed
from embedlab.evaluation.sts import correlations


class PairScoringEvaluator:
    """An evaluator over a cross-encoder's output for each of its `inputs` (pairs); subclasses define `score`.
    Calling it on a cross-encoder scores the pairs with `predict` (sigmoid scores, or logits for several labels)."""

    consumes: ClassVar[str] = "pair_scores"
    main_metric: str

    def __init__(self, name: str, pairs: ScoredPairs | ClassifiedPairs, batch_size: int = 32):
        self.name = name
        self.pairs = pairs
        self.batch_size = batch_size
        self.inputs = list(zip(pairs.sentence1, pairs.sentence2))

    def score(self, outputs: torch.Tensor) -> Metrics:
        raise NotImplementedError

    def __call__(self, cross_encoder) -> Metrics:
        return self.score(cross_encoder.predict(self.inputs, batch_size=self.batch_size, show_progress_bar=True))


class CrossEncoderSTSEvaluator(PairScoringEvaluator):
    """Keys "<name>/spearman" and "<name>/pearson" of the predicted scores against the gold."""

    main_metric = "spearman"

    def score(self, outputs: torch.Tensor) -> Metrics:
        if outputs.dim() != 1:
            raise ValueError(f"{self.name}: STS needs one score per pair, the model gives outputs of shape "
                             f"{tuple(outputs.shape)}")
        return keyed(self.name, correlations({"": outputs}, self.pairs.scores))


class CrossEncoderClassificationEvaluator(PairScoringEvaluator):
    """Keys "<name>/accuracy" and "<name>/f1" (macro) of the class with the largest logit."""

    main_metric = "accuracy"

    def score(self, outputs: torch.Tensor) -> Metrics:
        if outputs.dim() != 2 or outputs.shape[1] != self.pairs.num_classes:
            raise ValueError(f"{self.name}: {self.pairs.num_classes} classes need one logit each, the model gives "
                             f"outputs of shape {tuple(outputs.shape)}")
        return keyed(self.name, multiclass_metrics(outputs.argmax(dim=-1), torch.tensor(self.pairs.labels),
                                                   self.pairs.num_classes))
