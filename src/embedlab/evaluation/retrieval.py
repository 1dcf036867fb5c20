"""Retrieval: rank a corpus for each query and score the ranking against graded relevance judgements.

The metrics come from trec_eval (through pytrec_eval), averaged over the judged queries: nDCG@10 with the graded
gains, and MRR@10, MAP@100 and Recall@{1,10,100} counting any gain of 1 or more as relevant.
"""

import logging

import pytrec_eval

from embedlab.evaluation.datasets import RetrievalSet
from embedlab.evaluation.encoding import TextEncoder
from embedlab.evaluation.search import chunked_top_k

log = logging.getLogger(__name__)

# Our key -> trec_eval's measure. MRR@10 is trec_eval's reciprocal rank over the top 10 alone.
RANKING_MEASURES = {"ndcg@10": "ndcg_cut_10", "map@100": "map_cut_100", "recall@1": "recall_1",
                    "recall@10": "recall_10", "recall@100": "recall_100"}
MRR_CUTOFF = 10
SEARCH_DEPTH = 100


def ranking_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean metrics over the judged queries; `run[query_id][doc_id]` is the score of a retrieved document."""
    judged = {query_id: run[query_id] for query_id in qrels if run.get(query_id)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.100", "recall.1,10,100"}).evaluate(judged)
    top = {query_id: dict(sorted(docs.items(), key=lambda item: -item[1])[:MRR_CUTOFF])
           for query_id, docs in judged.items()}
    reciprocal_ranks = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top)
    # A judged query that retrieved nothing scores 0 (trec_eval would leave it out of the mean).
    metrics = {ours: _mean([per_query.get(query_id, {}).get(theirs, 0.0) for query_id in qrels])
               for ours, theirs in RANKING_MEASURES.items()}
    metrics["mrr@10"] = _mean([reciprocal_ranks.get(query_id, {}).get("recip_rank", 0.0) for query_id in qrels])
    return dict(sorted(metrics.items()))


class RetrievalEvaluator:
    """Scores one retrieval set; keys "<name>/ndcg@10", "<name>/mrr@10", "<name>/map@100", "<name>/recall@k"."""

    def __init__(self, name: str, data: RetrievalSet, batch_size: int = 32, score_function: str = "cosine",
                 corpus_chunk_size: int = 1024):
        self.name = name
        self.data = data
        self.batch_size = batch_size
        self.score_function = score_function
        self.corpus_chunk_size = corpus_chunk_size

    def __call__(self, encoder: TextEncoder) -> dict[str, float]:
        query_ids, doc_ids = list(self.data.queries), list(self.data.corpus)
        log.info("%s: %d queries against %d documents", self.name, len(query_ids), len(doc_ids))
        scores, indices = chunked_top_k(encoder, [self.data.queries[q] for q in query_ids],
                                        [self.data.corpus[d] for d in doc_ids], SEARCH_DEPTH,
                                        batch_size=self.batch_size, score_function=self.score_function,
                                        corpus_chunk_size=self.corpus_chunk_size, description=f"{self.name}: search")
        run = {query_id: {doc_ids[index]: score for index, score in zip(row_indices.tolist(), row_scores.tolist())}
               for query_id, row_scores, row_indices in zip(query_ids, scores, indices)}
        return {f"{self.name}/{metric}": value for metric, value in ranking_metrics(self.data.qrels, run).items()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
