"""Exact nearest-neighbour search, a block of the corpus at a time.

The corpus comes as chunks (embedded lazily by the caller, if it likes) and each chunk's scores are folded into a
running top-k per query, so memory holds one chunk's embeddings, one block of scores and the top-k lists: a
1M-document corpus needs no more than a 10k one beyond those.
"""

import math
import time
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from embedlab.errors import ConfigError

SCORE_FUNCTIONS = ("cosine", "dot")


def top_k(queries: torch.Tensor, corpus_chunks: Iterable[torch.Tensor], k: int, score_function: str = "cosine",
          query_block_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-first (scores, indices) of the `k` best corpus rows for each query, each of shape [queries, k'] where
    k' is min(k, corpus rows). Indices count rows across the chunks in order; scores are `cosine` or `dot`."""
    search = ExactSearch(queries, k, score_function, query_block_size)
    for chunk in corpus_chunks:
        search.add(chunk)
    return search.result()


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
        """Merge the scores of `chunk` (corpus rows from `chunk_start` on) into the running top-k; `queries` and
        `chunk` share a dtype (an int8 chunk is scored exactly in float32 by its caller)."""
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


class ExactSearch:
    """Exact float32 search: each chunk is folded into the running top-k as it comes, so memory holds one chunk.

    The searches here share this interface: `add(chunk)` for each corpus chunk in order, then `result()`;
    `bytes_per_document` is what the index keeps of each document and `search_seconds` the time spent scoring
    and ranking (not embedding or quantising the corpus).
    """

    def __init__(self, queries: torch.Tensor, k: int, score_function: str = "cosine", query_block_size: int = 256):
        self.score_function = check_score_function(score_function)
        self.queries = prepare(queries, score_function)
        self.best = TopK(len(queries), k)
        self.query_block_size = query_block_size
        self.rows = 0
        self.bytes_per_document = 4 * queries.shape[-1]
        self.search_seconds = 0.0

    def add(self, chunk: torch.Tensor) -> None:
        chunk = prepare(chunk, self.score_function)
        started = time.perf_counter()
        self.best.fold(self.queries, chunk, self.rows, self.query_block_size)
        self.search_seconds += time.perf_counter() - started
        self.rows += len(chunk)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.best.result(self.rows)


class QuantizedSearch:
    """Documents kept quantised (int8 or binary), ranked against the query quantised alike; with
    `rescore_multiplier` N > 0 the best `k * N` candidates are then ranked again by the float query against the
    documents' quantised form (dequantised), which keeps the index's memory and recovers most of the ranking.
    Without rescoring the scores are the quantised ones, so that the ranking judged is the index's own.

    Subclasses set `bytes_per_document` and define `encode_documents(chunk)` (returns the chunk's codes),
    `candidates(codes, count)` (best-first quantised scores and indices) and `decoded(codes)` (float rows).
    """

    def __init__(self, queries: torch.Tensor, k: int, score_function: str = "cosine", rescore_multiplier: int = 0):
        if rescore_multiplier < 0:
            raise ConfigError(f"rescore_multiplier must be 0 (no rescoring) or more, got {rescore_multiplier}")
        self.score_function = check_score_function(score_function)
        self.queries = prepare(queries, score_function)
        self.k = k
        self.rescore_multiplier = rescore_multiplier
        self.chunks: list[torch.Tensor] = []
        self.search_seconds = 0.0

    def add(self, chunk: torch.Tensor) -> None:
        self.chunks.append(self.encode_documents(prepare(chunk, self.score_function)))

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.chunks:
            return torch.empty(len(self.queries), 0), torch.empty(len(self.queries), 0, dtype=torch.long)
        codes = torch.cat(self.chunks)
        self.chunks = [codes]
        kept = min(self.k, len(codes))
        started = time.perf_counter()
        scores, indices = self.candidates(codes, min(kept * max(1, self.rescore_multiplier), len(codes)))
        if self.rescore_multiplier:
            rescored = torch.einsum("qd,qcd->qc", self.queries, self.decoded(codes[indices]))
            scores, order = rescored.topk(kept, dim=1)
            indices = indices.gather(1, order)
        self.search_seconds += time.perf_counter() - started
        return scores[:, :kept], indices[:, :kept]

    def encode_documents(self, chunk: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def candidates(self, codes: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decoded(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Int8Search(QuantizedSearch):
    """Each dimension of a document in 255 symmetric steps of that dimension's own scale (its largest magnitude
    in the first chunk; larger values are clipped). A query is multiplied by those scales and quantised to int8 with
    a scale of its own, so the integer dot product ranks as the float dot product of the query with the dequantised
    documents. The int8 products are summed in float32, where they stay exact (a few hundred products of at most
    127 * 127 sum far below 2**24), a block of documents at a time."""

    LEVELS = 127
    BLOCK = 8192

    def __init__(self, queries: torch.Tensor, k: int, score_function: str = "cosine", rescore_multiplier: int = 0):
        super().__init__(queries, k, score_function, rescore_multiplier)
        self.bytes_per_document = queries.shape[-1]
        self.scales: torch.Tensor | None = None

    def encode_documents(self, chunk: torch.Tensor) -> torch.Tensor:
        if self.scales is None:
            self.scales = chunk.abs().amax(dim=0).clamp(min=1e-12) / self.LEVELS
        return to_int8(chunk / self.scales)

    def candidates(self, codes: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        weighted = self.queries * self.scales
        query_codes = to_int8(weighted * self.LEVELS / weighted.abs().amax(dim=1, keepdim=True).clamp(min=1e-12))
        best = TopK(len(self.queries), count)
        for start in range(0, len(codes), self.BLOCK):
            best.fold(query_codes.float(), codes[start:start + self.BLOCK].float(), start, query_block_size=256)
        return best.result(len(codes))

    def decoded(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.float() * self.scales


class BinarySearch(QuantizedSearch):
    """One bit per dimension (its sign), ranked by Hamming distance (scores: minus the distance) in a faiss binary
    index; decoded as +1 and -1."""

    def __init__(self, queries: torch.Tensor, k: int, score_function: str = "cosine", rescore_multiplier: int = 0):
        super().__init__(queries, k, score_function, rescore_multiplier)
        try:
            import faiss
        except ImportError as error:
            raise ConfigError('binary search needs faiss: pip install "embedlab[search]"') from error
        self.dim = queries.shape[-1]
        self.index = faiss.IndexBinaryFlat(8 * math.ceil(self.dim / 8))
        self.bytes_per_document = self.index.code_size

    def encode_documents(self, chunk: torch.Tensor) -> torch.Tensor:
        packed = pack_signs(chunk)
        self.index.add(packed)
        return torch.from_numpy(packed)

    def candidates(self, codes: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        distances, indices = self.index.search(pack_signs(self.queries), count)
        return -torch.from_numpy(distances).float(), torch.from_numpy(indices).long()

    def decoded(self, codes: torch.Tensor) -> torch.Tensor:
        bits = np.unpackbits(codes.numpy(), axis=-1)[..., :self.dim]
        return torch.from_numpy(bits).float() * 2 - 1


def to_int8(values: torch.Tensor) -> torch.Tensor:
    return values.round().clamp(-Int8Search.LEVELS, Int8Search.LEVELS).to(torch.int8)


def pack_signs(embeddings: torch.Tensor) -> np.ndarray:
    """One bit per dimension, set where the value is positive, packed 8 to a byte (zero-padded)."""
    return np.packbits(embeddings.numpy() > 0, axis=-1)


SEARCHES = {"float32": ExactSearch, "int8": Int8Search, "binary": BinarySearch}
RESCORED = "rescore"


def parse_search(spec: str) -> tuple[str, bool]:
    """(precision, rescored) of a search spec: `float32`, `int8` or `binary`, the quantised ones optionally
    `+rescore`."""
    precision, _, rescore = spec.partition("+")
    if precision not in SEARCHES or rescore not in ("", RESCORED) or (rescore and precision == "float32"):
        raise ConfigError(f"unknown search {spec!r}; choose float32, int8, binary, int8+rescore or binary+rescore")
    return precision, bool(rescore)


def make_search(spec: str, queries: torch.Tensor, k: int, score_function: str = "cosine",
                rescore_multiplier: int = 4):
    """The search `spec` names (see `parse_search`) over the top `k` for each of `queries`."""
    precision, rescored = parse_search(spec)
    if precision == "float32":
        return ExactSearch(queries, k, score_function)
    return SEARCHES[precision](queries, k, score_function, rescore_multiplier if rescored else 0)
