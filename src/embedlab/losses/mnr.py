import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distributed import gather_with_grad, rank
from embedlab.errors import ConfigError
from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature

# sentence-transformers' names, so that a recipe reads the same on both sides. The query is the anchor; the
# documents are the positive and any hard-negative columns.
DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
PARTITIONS = ("joint", "per_direction")


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def check_directions(directions, partition: str) -> tuple[str, ...]:
    directions = tuple(directions)
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or "query_to_doc" not in directions:
        raise ConfigError(f"loss.directions must include query_to_doc and be among {list(DIRECTIONS)}, "
                          f"got {list(directions)}")
    if partition not in PARTITIONS:
        raise ConfigError(f"loss.partition must be one of {list(PARTITIONS)}, got {partition!r}")
    if partition == "per_direction" and {"query_to_query", "doc_to_doc"} & set(directions):
        # Their softmax would hold no positive, so its loss could only push every entry down, without end.
        raise ConfigError("loss.partition=per_direction takes only query_to_doc and doc_to_query, whose candidates "
                          f"hold the positive; got {list(directions)} (use partition=joint)")
    return directions


class MultipleNegativesRankingLoss(Loss):
    """Cross-entropy of each anchor against its positive, with every other candidate in the batch as a negative.

    Candidates are the positives and any hard-negative columns. Under DDP the candidates of all processes are
    gathered, so each anchor sees world_size times more negatives. `directions` adds more comparisons whose every
    entry is a negative: the anchor against the other anchors (query_to_query), the positive against the other
    anchors (doc_to_query, the symmetric loss) or against the other rows' documents (doc_to_doc). `partition`
    decides whether they share one softmax with the positive (joint, GTE's improved contrastive loss) or each
    has its own and the losses are averaged (per_direction).
    """

    signature = Signature(texts=("anchor", "positive"), repeated="negative")
    consumes = "embeddings"
    uses_in_batch_negatives = True

    def __init__(self, scale: float = 20.0, directions=("query_to_doc",), partition: str = "joint",
                 gather_across_devices: bool = True):
        super().__init__()
        self.scale = scale
        self.directions = check_directions(directions, partition)
        self.partition = partition
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        anchors, positives, *negatives = embeddings
        batch = anchors.shape[0]
        documents = [positives, *negatives]
        all_anchors, offset = anchors, 0
        if self.gather_across_devices:
            documents = [gather_with_grad(d) for d in documents]
            if {"query_to_query", "doc_to_query"} & set(self.directions):
                all_anchors = gather_with_grad(anchors)
            offset = rank() * batch
        rows = torch.arange(batch, device=anchors.device)
        own = rows + offset
        all_documents = torch.cat(documents)
        world_batch = documents[0].shape[0]

        own_column = F.one_hot(own, world_batch).bool()
        logits = {"query_to_doc": cosine_matrix(anchors, all_documents)}
        if "query_to_query" in self.directions:
            logits["query_to_query"] = cosine_matrix(anchors, all_anchors).masked_fill(own_column, -torch.inf)
        if "doc_to_query" in self.directions:
            logits["doc_to_query"] = cosine_matrix(positives, all_anchors)
        if "doc_to_doc" in self.directions:
            # The row's own positive and hard negatives are not negatives of its positive.
            own_documents = own_column.repeat(1, len(documents))
            logits["doc_to_doc"] = cosine_matrix(positives, all_documents).masked_fill(own_documents, -torch.inf)

        scaled = [m * self.scale for m in logits.values()]
        positive_logit = scaled[0][rows, own]
        if self.partition == "joint":
            log_partition = torch.logsumexp(torch.cat(scaled, dim=1), dim=1)
        else:
            log_partition = torch.stack([torch.logsumexp(m, dim=1) for m in scaled]).mean(dim=0)
        return (log_partition - positive_logit).mean()
