import torch.nn.functional as F
from torch import Tensor

from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature

# Label positions with this value (padding) are not predicted.
IGNORED_LABEL = -100


class ReconstructionLoss(Loss):
    """TSDAE's loss: cross-entropy of the decoder's next-token logits against the original sentence."""

    consumes = "token_logits"
    signature = Signature(texts=("text",))

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORED_LABEL)
