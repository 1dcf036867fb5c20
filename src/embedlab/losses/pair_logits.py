"""Cross-encoder losses: small modules over the logits of jointly scored pairs."""

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature


class BinaryCrossEntropyLoss(Loss):
    """Regression to a score in [0, 1] through one logit: BCE-with-logits against the score."""

    signature = Signature(texts=("sentence1", "sentence2"), target="score")
    consumes = "pair_logits"
    num_labels = 1

    def forward(self, logits: Tensor, scores: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), scores.to(logits.dtype))


class PairMSELoss(Loss):
    """Regression to a score in [0, 1]: MSE between the sigmoid of one logit (what predict returns) and the score."""

    signature = Signature(texts=("sentence1", "sentence2"), target="score")
    consumes = "pair_logits"
    num_labels = 1

    def forward(self, logits: Tensor, scores: Tensor) -> Tensor:
        return F.mse_loss(torch.sigmoid(logits.squeeze(-1)), scores.to(logits.dtype))


class PairCrossEntropyLoss(Loss):
    """Classification of pairs (for example NLI labels) with one logit per class."""

    signature = Signature(texts=("sentence1", "sentence2"), target="label")
    consumes = "pair_logits"

    def __init__(self, num_labels: int = 3):
        super().__init__()
        self.num_labels = num_labels

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels.long())
