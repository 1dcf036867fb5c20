"""Exact nearest-neighbour search, a block of the corpus at a time.

The corpus comes as chunks (embedded lazily by the caller, if it likes) and each chunk's scores are folded into a
running top-k per query, so memory holds one chunk's embeddings, one block of scores and the top-k lists: a
1M-document corpus needs no more than a 10k one beyond those.
"""

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from embedlab.errors import ConfigError

SCORE_FUNCTIONS = ("cosine", "dot")


def top_k(queries: torch.Tensor, corpus_chunks: Iterable[torch.Tensor], k: int, score_function: str = "cosine",
          query_block_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-first (scores, indices) of the `k` best corpus rows for each query, each of shape [queries, k'] where
    k' is min(k, corpus rows). Indices count rows across the chunks in order; scores are `cosine` or `dot`."""
    check_score_function(score_function)
    queries = prepare(queries, score_function)
    best = None
    start = 0
    for chunk in corpus_chunks:
        chunk = prepare(chunk, score_function)
        if best is None:
            best = TopK(len(queries), k)
        best.fold(queries, chunk, start, query_block_size)
        start += len(chunk)
    if best is None:
        return torch.empty(len(queries), 0), torch.empty(len(queries), 0, dtype=torch.long)
    return best.result(start)


def top_k_cosine(queries: torch.Tensor, corpus: torch.Tensor, k: int, block_size: int = 1024
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """`top_k` by cosine for a corpus already embedded in memory."""
    return top_k(queries, corpus.split(block_size), k, "cosine", query_block_size=block_size)


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

    def result(self, corpus_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, indices) without the places a corpus smaller than k never filled."""
        kept = min(self.k, corpus_rows)
        return self.scores[:, :kept], self.indices[:, :kept]


def check_score_function(score_function: str) -> str:
    if score_function not in SCORE_FUNCTIONS:
        raise ConfigError(f"score_function must be one of {', '.join(SCORE_FUNCTIONS)}, got {score_function!r}")
    return score_function


def prepare(embeddings: torch.Tensor, score_function: str) -> torch.Tensor:
    """float32 rows, unit length for cosine (so that a dot product is the cosine)."""
    embeddings = embeddings.float()
    return F.normalize(embeddings, p=2, dim=-1) if score_function == "cosine" else embeddings
