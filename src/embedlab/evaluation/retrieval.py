"""Retrieval: rank a corpus for each query and score the ranking against graded relevance judgements.

The metrics come from trec_eval (through pytrec_eval), averaged over the judged queries: nDCG@10 with the graded
gains, and MRR@10, MAP@100 and Recall@{1,10,100} counting any gain of 1 or more as relevant.
"""

import logging
from collections.abc import Sequence

import pytrec_eval
import torch
from tqdm.auto import tqdm

from embedlab.errors import ConfigError
from embedlab.evaluation.datasets import RetrievalSet
from embedlab.evaluation.encoding import (
    EmbeddingEvaluator,
    Metrics,
    TextEncoder,
    encode_inputs,
    keyed,
)
from embedlab.modeling.search import check_score_function, make_search, parse_search

log = logging.getLogger(__name__)

# Our key -> trec_eval's measure. MRR@10 is trec_eval's reciprocal rank over the top 10 alone.
RANKING_MEASURES = {"ndcg@10": "ndcg_cut_10", "map@100": "map_cut_100", "recall@1": "recall_1",
                    "recall@10": "recall_10", "recall@100": "recall_100"}
MRR_CUTOFF = 10
SEARCH_DEPTH = 100
QUERY_ROLE, DOCUMENT_ROLE = "query", "document"


def per_query_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
                      ) -> dict[str, dict[str, float]]:
    """Each metric for each judged query (a judged query that retrieved nothing scores 0, where trec_eval would
    leave it out): metric -> query id -> value. The per-query values are what a paired significance test compares."""
    judged = {query_id: run[query_id] for query_id in qrels if run.get(query_id)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.100", "recall.1,10,100"}).evaluate(judged)
    top = {query_id: dict(sorted(docs.items(), key=lambda item: -item[1])[:MRR_CUTOFF])
           for query_id, docs in judged.items()}
    reciprocal_ranks = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top)
    values = {ours: {query_id: per_query.get(query_id, {}).get(theirs, 0.0) for query_id in qrels}
              for ours, theirs in RANKING_MEASURES.items()}
    values["mrr@10"] = {query_id: reciprocal_ranks.get(query_id, {}).get("recip_rank", 0.0) for query_id in qrels}
    return values


def ranking_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean metrics over the judged queries; `run[query_id][doc_id]` is the score of a retrieved document."""
    return {metric: _mean(list(values.values()))
            for metric, values in sorted(per_query_metrics(qrels, run).items())}


class RetrievalEvaluator(EmbeddingEvaluator):
    """Scores one retrieval set; keys "<name>/ndcg@10", "<name>/mrr@10", "<name>/map@100", "<name>/recall@k",
    and what the search costs: "<name>/memory_mb_per_million_docs" (the index's bytes per document, scaled) and
    "<name>/queries_per_second" (scoring and ranking only, not embedding).

    Queries are embedded in the "query" role and documents in the "document" role, so a model with prompts applies
    its query and document prompts. Called on an encoder, the corpus is embedded a chunk at a time; after a run,
    `per_query` holds each query's figures.

    `searches` ranks the same embeddings with each search in turn (embedlab.modeling.search.make_search): exact
    `float32` (the default), `int8` or `binary` embeddings, the quantised ones optionally `+rescore` (the best
    `rescore_multiplier` * 100 candidates ranked again by the float query). The first search gives the keys above;
    each further one the same metrics under "<name>-<search>/..." (e.g. "test/liveqa-med-binary-rescore/ndcg@10").
    """

    main_metric = "ndcg@10"

    def __init__(self, name: str, data: RetrievalSet, batch_size: int = 32, score_function: str = "cosine",
                 corpus_chunk_size: int = 1024, searches: Sequence[str] = ("float32",), rescore_multiplier: int = 4):
        self.name = name
        self.data = data
        self.batch_size = batch_size
        self.score_function = check_score_function(score_function)
        self.corpus_chunk_size = corpus_chunk_size
        if not searches:
            raise ConfigError(f"{name}: searches must name at least one search, e.g. [float32]")
        self.searches = list(searches)
        self.rescore_multiplier = rescore_multiplier
        for spec in self.searches:
            parse_search(spec)  # a bad name fails before anything is embedded
        self.query_ids, self.doc_ids = list(data.queries), list(data.corpus)
        self.inputs = ([(QUERY_ROLE, data.queries[q]) for q in self.query_ids]
                       + [(DOCUMENT_ROLE, data.corpus[d]) for d in self.doc_ids])
        self.per_query: dict[str, dict[str, float]] = {}

    def __call__(self, encoder: TextEncoder) -> Metrics:
        queries = encode_inputs(encoder, self.inputs[:len(self.query_ids)], self.batch_size)
        documents = self.inputs[len(self.query_ids):]

        def corpus_chunks():
            with tqdm(total=len(documents), desc=f"{self.name}: search", unit="doc") as progress:
                for start in range(0, len(documents), self.corpus_chunk_size):
                    chunk = documents[start:start + self.corpus_chunk_size]
                    yield encode_inputs(encoder, chunk, self.batch_size, show_progress_bar=False)
                    progress.update(len(chunk))

        return self._rank(queries, corpus_chunks())

    def score(self, embeddings: torch.Tensor) -> Metrics:
        queries, documents = embeddings[:len(self.query_ids)], embeddings[len(self.query_ids):]
        return self._rank(queries, documents.split(self.corpus_chunk_size))

    def _rank(self, queries: torch.Tensor, corpus_chunks) -> Metrics:
        log.info("%s: %d queries against %d documents", self.name, len(self.query_ids), len(self.doc_ids))
        searches = {spec: make_search(spec, queries, SEARCH_DEPTH, self.score_function, self.rescore_multiplier)
                    for spec in self.searches}
        for chunk in corpus_chunks:
            for search in searches.values():
                search.add(chunk)
        metrics: Metrics = {}
        for position, (spec, search) in enumerate(searches.items()):
            scores, indices = search.result()
            run = {query_id: {self.doc_ids[index]: score
                              for index, score in zip(row_indices.tolist(), row_scores.tolist())}
                   for query_id, row_scores, row_indices in zip(self.query_ids, scores, indices)}
            per_query = per_query_metrics(self.data.qrels, run)
            if position == 0:
                self.per_query = per_query
            name = self.name if position == 0 else f"{self.name}-{spec.replace('+', '-')}"
            metrics.update(keyed(name, {**{metric: _mean(list(values.values()))
                                           for metric, values in sorted(per_query.items())},
                                        "memory_mb_per_million_docs": search.bytes_per_document * 1e6 / 2**20,
                                        "queries_per_second": len(self.query_ids) / max(search.search_seconds,
                                                                                        1e-9)}))
        return metrics


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
