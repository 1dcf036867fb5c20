import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature


class CoSENTLoss(Loss):
    """CoSENT: every pair (i, j) with score_i < score_j is penalised when cos_i is not below cos_j.

    loss = log(1 + sum over such pairs of exp(scale * (cos_i - cos_j))). Only the order of scores matters.
    """

    signature = Signature(texts=("sentence1", "sentence2"), target="score")
    consumes = "embeddings"

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        u, v = embeddings
        cosines = F.cosine_similarity(u, v) * self.scale
        differences = cosines[:, None] - cosines[None, :]
        ordered = labels[:, None] < labels[None, :]
        terms = differences[ordered]
        return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)
