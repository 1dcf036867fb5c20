import torch.nn.functional as F
from torch import Tensor

from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature


class CosineSimilarityLoss(Loss):
    """Mean squared error between the cosine of a pair and its gold score in [0, 1]."""

    signature = Signature(texts=("sentence1", "sentence2"), target="score")
    consumes = "embeddings"

    def forward(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        u, v = embeddings
        return F.mse_loss(F.cosine_similarity(u, v), labels.to(u.dtype))
