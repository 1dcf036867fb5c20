from embedlab.errors import ConfigError
from embedlab.losses.mnr import MultipleNegativesRankingLoss


class CachedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """MNR over a large batch at the memory of a mini-batch (GradCache): the same loss and the same gradients.

    The loss itself is MNR's; `mini_batch_size` asks the model to embed each column in mini-batches of that size
    without keeping their activations, and to re-run them one at a time in backward.
    """

    def __init__(self, mini_batch_size: int = 32, scale: float = 20.0, directions=("query_to_doc",),
                 partition: str = "joint", gather_across_devices: bool = True):
        super().__init__(scale=scale, directions=directions, partition=partition,
                         gather_across_devices=gather_across_devices)
        if mini_batch_size < 1:
            raise ConfigError(f"loss.mini_batch_size must be at least 1, got {mini_batch_size}")
        self.mini_batch_size = mini_batch_size
