"""What every loss declares about itself, read before anything is built: by the data module (which columns to
offer, whether a batch must hold each text once) and by the objective (which model output to hand over, which facts
of the model the constructor takes, whether to embed in mini-batches)."""

from typing import ClassVar

from torch import nn

from embedlab.losses.signature import Signature


class Loss(nn.Module):
    """The base of every loss. Subclasses set the class attributes; the defaults are stated here, once."""

    # The data columns the loss reads, in order.
    signature: ClassVar[Signature]
    # The model output it is a function of: "embeddings" (bi-encoder), "pair_logits" (cross-encoder) or
    # "token_logits" (TSDAE's decoder).
    consumes: ClassVar[str]
    # True: every other row of the batch is a negative, so the batch must hold each text once.
    uses_in_batch_negatives: ClassVar[bool] = False
    # Facts of the model that the constructor takes as keyword arguments, e.g. ("embedding_dim",).
    requires: ClassVar[tuple[str, ...]] = ()
    # Set: the objective embeds each column in mini-batches of this size without keeping their activations
    # (GradCache), re-running them in backward.
    mini_batch_size: int | None = None
    # For losses over pair logits: the number of logits the cross-encoder's head must have.
    num_labels: int | None = None
    # Set: a model (a folder or hub id) whose embeddings of the same columns the loss takes as `guide_embeddings`;
    # the objective loads it frozen and embeds each batch with it too.
    guide: str | None = None

    @classmethod
    def declared(cls, loss_cfg) -> type["Loss"]:
        """The class whose declarations describe the configured loss: itself, or for a wrapper the wrapped loss's."""
        return cls
