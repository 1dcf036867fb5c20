import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature


class SoftmaxLoss(Loss):
    """The SBERT NLI classifier: a linear layer over (u, v, |u - v|), trained with cross-entropy.

    The classifier is discarded after training; only the encoder is saved.
    """

    signature = Signature(texts=("sentence1", "sentence2"), target="label")
    consumes = "embeddings"
    requires = ("embedding_dim",)

    def __init__(self, embedding_dim: int, num_labels: int = 3):
        super().__init__()
        self.num_labels = num_labels
        self.classifier = nn.Linear(3 * embedding_dim, num_labels)

    def forward(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        u, v = embeddings
        logits = self.classifier(torch.cat([u, v, (u - v).abs()], dim=-1))
        return F.cross_entropy(logits, labels.long())
