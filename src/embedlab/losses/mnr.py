import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distributed import gather_with_grad, rank
from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


class MultipleNegativesRankingLoss(Loss):
    """Cross-entropy of each anchor against its positive, with every other candidate in the batch as a negative.

    Candidates are the positives and any hard-negative columns. Under DDP the candidates of all processes are
    gathered, so each anchor sees world_size times more negatives. `symmetric` adds the reverse direction: each
    positive must also pick its own anchor among all anchors.
    """

    signature = Signature(texts=("anchor", "positive"), repeated="negative")
    consumes = "embeddings"
    uses_in_batch_negatives = True

    def __init__(self, scale: float = 20.0, symmetric: bool = False, gather_across_devices: bool = True):
        super().__init__()
        self.scale = scale
        self.symmetric = symmetric
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        anchors, positives, *negatives = embeddings
        batch = anchors.shape[0]
        offset = 0
        candidates = [positives, *negatives]
        all_anchors = anchors
        if self.gather_across_devices:
            candidates = [gather_with_grad(c) for c in candidates]
            offset = rank() * batch
            if self.symmetric:
                all_anchors = gather_with_grad(anchors)
        targets = torch.arange(offset, offset + batch, device=anchors.device)
        scores = cosine_matrix(anchors, torch.cat(candidates)) * self.scale
        loss = F.cross_entropy(scores, targets)
        if self.symmetric:
            reverse = cosine_matrix(positives, all_anchors) * self.scale
            loss = (loss + F.cross_entropy(reverse, targets)) / 2
        return loss
