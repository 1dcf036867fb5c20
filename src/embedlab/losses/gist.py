import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distributed import gather_with_grad, rank
from embedlab.errors import ConfigError
from embedlab.losses.base import Loss
from embedlab.losses.mnr import cosine_matrix
from embedlab.losses.signature import Signature

MARGIN_STRATEGIES = ("absolute", "relative")


class GISTEmbedLoss(Loss):
    """In-batch contrastive loss whose candidates a guide model vets (GISTEmbed, Solatorio 2024): a candidate the
    guide scores above the anchor's own positive (less `margin`) is taken for an unlabelled positive and left out.

    The candidates of each anchor are every positive and hard negative of the batch, and, with `contrast_anchors` and
    `contrast_positives`, the other anchors and the other positives seen from the anchor's positive. Scores are
    cosines over `temperature`. The guide embeds the same columns (`guide_embeddings`); its model is `guide`, a
    saved model or hub id, loaded and frozen by the objective. Under DDP, `gather_across_devices` shares the
    positives and negatives of every process.
    """

    signature = Signature(texts=("anchor", "positive"), repeated="negative")
    consumes = "embeddings"
    uses_in_batch_negatives = True

    def __init__(self, guide: str, temperature: float = 0.01, margin_strategy: str = "absolute", margin: float = 0.0,
                 contrast_anchors: bool = True, contrast_positives: bool = True, gather_across_devices: bool = False):
        super().__init__()
        if margin_strategy not in MARGIN_STRATEGIES:
            raise ConfigError(f"loss.margin_strategy must be one of {', '.join(MARGIN_STRATEGIES)}, "
                              f"got {margin_strategy!r}")
        if temperature <= 0:
            raise ConfigError(f"loss.temperature must be positive, got {temperature}")
        self.guide = guide
        self.temperature = temperature
        self.margin_strategy = margin_strategy
        self.margin = margin
        self.contrast_anchors = contrast_anchors
        self.contrast_positives = contrast_positives
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: list[Tensor], labels: Tensor | None = None,
                guide_embeddings: list[Tensor] | None = None) -> Tensor:
        if guide_embeddings is None:
            raise ConfigError("loss 'gist' needs the guide's embeddings of the same columns")
        anchors, positives, *negatives = embeddings
        guide_anchors, guide_positives, *guide_negatives = guide_embeddings
        batch = anchors.shape[0]
        offset = 0
        if self.gather_across_devices:
            positives, guide_positives = gather_with_grad(positives), gather_with_grad(guide_positives)
            negatives = [gather_with_grad(negative) for negative in negatives]
            guide_negatives = [gather_with_grad(negative) for negative in guide_negatives]
            offset = rank() * batch
        rows = torch.arange(batch, device=anchors.device)
        guide_positive_scores = cosine_matrix(guide_anchors, guide_positives)[rows, offset + rows].unsqueeze(1)
        own_positive = torch.zeros(batch, positives.shape[0], dtype=torch.bool, device=anchors.device)
        own_positive[rows, offset + rows] = True

        def vetted(first: Tensor, second: Tensor, guide_first: Tensor, guide_second: Tensor,
                   keep: Tensor | None = None) -> Tensor:
            scores = cosine_matrix(first, second)
            guide_scores = cosine_matrix(guide_first, guide_second)
            threshold = (guide_positive_scores - self.margin if self.margin_strategy == "absolute"
                         else guide_positive_scores - guide_positive_scores.abs() * self.margin)
            false_negative = guide_scores > threshold
            if keep is not None:
                false_negative &= ~keep
            return scores.masked_fill(false_negative, float("-inf"))

        blocks = [vetted(anchors, positives, guide_anchors, guide_positives, keep=own_positive)]
        if self.contrast_anchors:
            blocks.append(vetted(anchors, anchors, guide_anchors, guide_anchors))
        if self.contrast_positives:
            mine = slice(offset, offset + batch)
            blocks.append(vetted(positives[mine], positives, guide_positives[mine], guide_positives))
        blocks += [vetted(anchors, negative, guide_anchors, guide_negative)
                   for negative, guide_negative in zip(negatives, guide_negatives)]
        return F.cross_entropy(torch.cat(blocks, dim=1) / self.temperature, offset + rows)


class CachedGISTEmbedLoss(GISTEmbedLoss):
    """GISTEmbed over a large batch at the memory of a mini-batch (GradCache): the objective embeds each column in
    mini-batches of `mini_batch_size` without keeping their activations and re-runs them in backward."""

    def __init__(self, guide: str, mini_batch_size: int = 32, **settings):
        super().__init__(guide, **settings)
        if mini_batch_size < 1:
            raise ConfigError(f"loss.mini_batch_size must be at least 1, got {mini_batch_size}")
        self.mini_batch_size = mini_batch_size
