from collections.abc import Sequence

from hydra.utils import get_class
from torch import Tensor, nn

from embedlab.errors import ConfigError
from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature, configured_loss_class


class MatryoshkaLoss(Loss):
    """Any embedding loss applied to the first d dimensions of the embeddings, for each d in `dims`, weighted and
    summed, so that truncated embeddings stay useful (Matryoshka representation learning).

    It reads the columns the wrapped loss reads, and passes on the wrapped loss's `mini_batch_size` and `guide`, so
    a cached loss inside keeps its memory saving and a guided one its guide.
    """

    consumes = "embeddings"
    requires = ("embedding_dim",)

    def __init__(self, inner: nn.Module, dims: Sequence[int], weights: Sequence[float] | None = None,
                 embedding_dim: int | None = None):
        super().__init__()
        dims = [int(d) for d in dims]
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if not dims or min(dims) < 1:
            raise ConfigError(f"loss.dims must be one or more positive sizes, got {dims}")
        if embedding_dim is not None and max(dims) > embedding_dim:
            raise ConfigError(f"loss.dims {dims} exceed the embedding size {embedding_dim}")
        if len(weights) != len(dims):
            raise ConfigError(f"loss.weights has {len(weights)} values for {len(dims)} dims")
        self.inner = inner
        self.dims = dims
        self.weights = weights

    @classmethod
    def declared(cls, loss_cfg) -> type[Loss]:
        inner_class = configured_loss_class(loss_cfg["inner"])
        if inner_class.consumes != cls.consumes:
            raise ConfigError(f"loss 'matryoshka' wraps losses over embeddings; {inner_class.__name__} consumes "
                              f"{inner_class.consumes}")
        if "embedding_dim" in get_class(loss_cfg["inner"]["_target_"]).requires:
            raise ConfigError(f"loss 'matryoshka' cannot wrap {inner_class.__name__}: its parameters are sized by "
                              "the embedding, which truncation changes")
        return inner_class

    @property
    def signature(self) -> Signature:
        return self.inner.signature

    @property
    def uses_in_batch_negatives(self) -> bool:
        return self.inner.uses_in_batch_negatives

    @property
    def mini_batch_size(self) -> int | None:
        return self.inner.mini_batch_size

    @property
    def guide(self) -> str | None:
        return self.inner.guide

    def forward(self, embeddings: list[Tensor], labels: Tensor | None = None, **guide) -> Tensor:
        # A guide's embeddings come from another model and are compared whole: only the student's are truncated.
        return sum(weight * self.inner([e[..., :dim] for e in embeddings], labels, **guide)
                   for dim, weight in zip(self.dims, self.weights))
