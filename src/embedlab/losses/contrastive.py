import torch.nn.functional as F
from torch import Tensor

from embedlab.errors import DataError
from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature


class ContrastiveLoss(Loss):
    """Pull pairs labelled 1 together; push pairs labelled 0 to a cosine distance of at least `margin`."""

    signature = Signature(texts=("sentence1", "sentence2"), target="label")
    consumes = "embeddings"

    def __init__(self, margin: float = 0.5):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        if not ((labels == 0) | (labels == 1)).all():
            raise DataError(f"loss 'contrastive' needs binary labels (0 or 1), got {sorted(set(labels.tolist()))}")
        u, v = embeddings
        distances = 1 - F.cosine_similarity(u, v)
        labels = labels.to(u.dtype)
        losses = labels * distances.pow(2) + (1 - labels) * F.relu(self.margin - distances).pow(2)
        return 0.5 * losses.mean()
