"""Exact nearest-neighbour search over a corpus too large to hold as one embedding matrix.

The corpus is encoded a chunk at a time and each chunk's scores are folded into a running top-k per query, so
memory holds one chunk's embeddings, one block of scores and the top-k lists: a 1M-document corpus needs no more
than a 10k one beyond those.
"""

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from embedlab.evaluation.encoding import TextEncoder

SCORE_FUNCTIONS = ("cosine", "dot")


def chunked_top_k(encoder: TextEncoder, queries: list[str], corpus: list[str], top_k: int, batch_size: int = 32,
                  score_function: str = "cosine", corpus_chunk_size: int = 1024, query_block_size: int = 256,
                  description: str = "search") -> tuple[torch.Tensor, torch.Tensor]:
    """The `top_k` best corpus positions for each query, best first: (scores, indices), each [queries, k].

    k is min(top_k, len(corpus)). Scores come from `score_function`: `cosine` or `dot`.
    """
    if score_function not in SCORE_FUNCTIONS:
        raise ValueError(f"score_function must be one of {', '.join(SCORE_FUNCTIONS)}, got {score_function!r}")
    k = min(top_k, len(corpus))
    query_embeddings = _prepare(encoder.encode(queries, batch_size=batch_size, show_progress_bar=True), score_function)
    best = TopK(len(queries), k)
    with tqdm(total=len(corpus), desc=description, unit="doc") as progress:
        for start in range(0, len(corpus), corpus_chunk_size):
            chunk = _prepare(encoder.encode(corpus[start:start + corpus_chunk_size], batch_size=batch_size),
                             score_function)
            best.fold(query_embeddings, chunk, start, query_block_size)
            progress.update(len(chunk))
    return best.scores, best.indices


def top_k_cosine(queries: torch.Tensor, corpus: torch.Tensor, k: int, block_size: int = 1024
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-first (scores, indices) of the k most cosine-similar corpus rows, for embeddings already in memory."""
    queries, corpus = _prepare(queries, "cosine"), _prepare(corpus, "cosine")
    best = TopK(len(queries), min(k, len(corpus)))
    for start in range(0, len(corpus), block_size):
        best.fold(queries, corpus[start:start + block_size], start, block_size)
    return best.scores, best.indices


class TopK:
    """A running top-k per query, so that only one block of scores ever exists at a time."""

    def __init__(self, num_queries: int, k: int):
        self.k = k
        self.scores = torch.full((num_queries, k), float("-inf"))
        self.indices = torch.full((num_queries, k), -1, dtype=torch.long)

    def fold(self, queries: torch.Tensor, chunk: torch.Tensor, chunk_start: int, query_block_size: int) -> None:
        """Merge the scores of `chunk` (corpus rows from `chunk_start` on) into the running top-k."""
        for first in range(0, len(queries), query_block_size):
            rows = slice(first, first + query_block_size)
            chunk_scores, chunk_indices = (queries[rows] @ chunk.T).topk(min(self.k, len(chunk)), dim=1)
            merged_scores = torch.cat([self.scores[rows], chunk_scores], dim=1)
            merged_indices = torch.cat([self.indices[rows], chunk_indices + chunk_start], dim=1)
            self.scores[rows], order = merged_scores.topk(self.k, dim=1)
            self.indices[rows] = merged_indices.gather(1, order)


def _prepare(embeddings: torch.Tensor, score_function: str) -> torch.Tensor:
    embeddings = embeddings.float()
    return F.normalize(embeddings, p=2, dim=-1) if score_function == "cosine" else embeddings
