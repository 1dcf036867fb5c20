"""int8 and binary embeddings for search: what they keep of the exact ranking, what rescoring recovers, what the
index costs, and the retrieval evaluator running several searches over one embedding of the corpus."""

import pytest
import torch
import torch.nn.functional as F
from test_evaluation_retrieval import hand_made_set

from embedlab.errors import ConfigError
from embedlab.evaluation.retrieval import RetrievalEvaluator
from embedlab.modeling.search import make_search, top_k

pytestmark = pytest.mark.usefixtures("one_thread")
DIM = 64


def clustered(documents: int = 2000, queries: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries that are noisy copies of the first documents: each query's exact best match is its own document."""
    generator = torch.Generator().manual_seed(0)
    corpus = F.normalize(torch.randn(documents, DIM, generator=generator), dim=-1)
    noisy = corpus[:queries] + 0.3 * torch.randn(queries, DIM, generator=generator) / DIM ** 0.5
    return F.normalize(noisy, dim=-1), corpus


def searched(spec: str, queries: torch.Tensor, corpus: torch.Tensor, k: int = 10):
    search = make_search(spec, queries, k, rescore_multiplier=4)
    for chunk in corpus.split(300):
        search.add(chunk)
    return search, *search.result()


def overlap_with_exact(indices: torch.Tensor, queries: torch.Tensor, corpus: torch.Tensor) -> float:
    _, exact = top_k(queries, corpus.split(300), indices.shape[1])
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(indices, exact)) / exact.numel()


def test_int8_keeps_the_exact_ranking_nearly_whole():
    queries, corpus = clustered()
    search, scores, indices = searched("int8", queries, corpus)
    assert scores.shape == indices.shape == (len(queries), 10)
    assert (indices[:, 0] == torch.arange(len(queries))).all()
    assert overlap_with_exact(indices, queries, corpus) > 0.9
    assert search.bytes_per_document == DIM
    # Without rescoring the scores are the index's own: best first.
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_rescoring_recovers_what_binary_loses():
    queries, corpus = clustered()
    _, _, binary = searched("binary", queries, corpus)
    search, scores, rescored = searched("binary+rescore", queries, corpus)
    assert search.bytes_per_document == DIM // 8
    assert overlap_with_exact(rescored, queries, corpus) > overlap_with_exact(binary, queries, corpus) + 0.1
    assert (rescored[:, 0] == torch.arange(len(queries))).float().mean() > 0.95
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_a_corpus_smaller_than_k_and_an_empty_one():
    queries, corpus = clustered(documents=5, queries=3)
    for spec in ("float32", "int8", "binary+rescore"):
        _, _, indices = searched(spec, queries, corpus)
        assert indices.shape == (3, 5) and sorted(indices[0].tolist()) == list(range(5))
        empty = make_search(spec, queries, 10)
        assert empty.result()[1].shape == (3, 0)


def test_the_evaluator_scores_every_search_over_one_embedding():
    data, encoder = hand_made_set()
    default = RetrievalEvaluator("hand", data, batch_size=2)(encoder)
    several = RetrievalEvaluator("hand", data, batch_size=2, searches=["float32", "int8", "binary+rescore"])
    metrics = several(encoder)
    for metric in ("ndcg@10", "mrr@10", "map@100", "recall@1", "recall@10", "recall@100"):
        assert metrics[f"hand/{metric}"] == default[f"hand/{metric}"]
        assert 0 <= metrics[f"hand-int8/{metric}"] <= 1 and 0 <= metrics[f"hand-binary-rescore/{metric}"] <= 1
    assert metrics["hand/memory_mb_per_million_docs"] == pytest.approx(2 * 4 * 1e6 / 2**20)
    assert metrics["hand-int8/memory_mb_per_million_docs"] == pytest.approx(2 * 1e6 / 2**20)
    assert metrics["hand-binary-rescore/memory_mb_per_million_docs"] == pytest.approx(1e6 / 2**20)
    assert all(metrics[f"{name}/queries_per_second"] > 0 for name in ("hand", "hand-int8", "hand-binary-rescore"))


def test_an_unknown_search_fails_before_anything_is_embedded():
    data, _ = hand_made_set()
    for spec in ("int4", "float32+rescore", "binary+rerank"):
        with pytest.raises(ConfigError, match="unknown search"):
            RetrievalEvaluator("hand", data, searches=[spec])
