import torch.nn.functional as F
from torch import Tensor

from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature


class TripletLoss(Loss):
    """The anchor must be closer (Euclidean) to the positive than to the negative by at least `margin`."""

    signature = Signature(texts=("anchor", "positive", "negative"))
    consumes = "embeddings"

    def __init__(self, margin: float = 5.0):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        anchors, positives, negatives = embeddings
        gap = F.pairwise_distance(anchors, positives) - F.pairwise_distance(anchors, negatives)
        return F.relu(gap + self.margin).mean()
