"""Hard-negative mining: for each (anchor, positive), the corpus texts a bi-encoder ranks high that are not an answer.

The candidates are the corpus and every row's positive. For each distinct anchor (a query with several positives is
mined once) the filters apply in this order, as sentence-transformers' `mine_hard_negatives` applies them:
1. the anchor's own positives (all of them, from every row of the anchor) and the anchor text are never negatives;
2. margins against the anchor's hardest (lowest-scoring) positive: `absolute_margin` drops candidates scoring above
   positive - margin; `relative_margin` those above positive - |positive| * margin, the positive-aware filter of
   NV-Retriever ("below 95% of the positive's score" is relative_margin=0.05);
3. `max_score` and `min_score` bound a candidate's score;
4. of the candidates left, best first, the ranks [range_min, range_max) are kept, and `num_negatives` of them are
   taken: the best (`sampling="top"`) or drawn at random (`"random"`, seeded).
With a cross-encoder and any score filter, the cross-encoder's scores of the candidates and positives replace the
bi-encoder's in steps 2 and 3 (the bi-encoder still chooses the candidates). Each mined row carries `scores`: the
score of its positive, then of each negative, for a distillation loss. `use_faiss` searches with a faiss flat
inner-product index instead of torch's blocked top-k.
"""

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from embedlab.assembly import build_datamodule
from embedlab.errors import ConfigError, DataError
from embedlab.modeling.cross_encoder import CrossEncoder
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.search import prepare, top_k_cosine
from embedlab.run_folder import write_json

log = logging.getLogger(__name__)
SAMPLING = ("top", "random")


@dataclass
class MiningSettings:
    num_negatives: int = 1
    range_min: int = 0
    # None: as sentence-transformers chooses it, room for the positives and the negatives (ten times as many when
    # a score filter may drop some) past range_min.
    range_max: int | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    sampling: str = "top"
    seed: int = 0
    use_faiss: bool = False

    def __post_init__(self):
        if self.num_negatives < 1:
            raise ConfigError(f"mining.num_negatives must be at least 1, got {self.num_negatives}")
        if self.range_min < 0:
            raise ConfigError(f"mining.range_min must be non-negative, got {self.range_min}")
        if self.sampling not in SAMPLING:
            raise ConfigError(f"mining.sampling must be one of {', '.join(SAMPLING)}, got {self.sampling!r}")

    @property
    def filters_scores(self) -> bool:
        return any(value is not None for value in (self.absolute_margin, self.relative_margin, self.max_score,
                                                   self.min_score))

    def depth(self, max_positives: int) -> int:
        """range_max, checked against range_min and num_negatives."""
        range_max = self.range_max
        if range_max is None:
            room = self.num_negatives * (10 if self.filters_scores else 1)
            range_max = self.range_min + room + max_positives
        if range_max - self.range_min < self.num_negatives:
            raise ConfigError(f"mining: {self.num_negatives} negatives cannot come from ranks "
                              f"[{self.range_min}, {range_max})")
        return range_max


def mine_hard_negatives(encoder, rows: list[dict], settings: MiningSettings, corpus: list[str] | None = None,
                        cross_encoder=None, batch_size: int = 64) -> list[dict]:
    """Rows (anchor, positive, negative_1..n, scores); rows that find fewer than n negatives are left out.

    Anchors are embedded in the encoder's "query" role and candidates in its "document" role, so a model with
    query and document prompts mines with them.
    """
    positives_of: dict[str, list[str]] = {}
    for row in rows:
        found = positives_of.setdefault(row["anchor"], [])
        if row["positive"] not in found:
            found.append(row["positive"])
    queries = list(positives_of)
    candidates = list(dict.fromkeys([*(corpus or []), *(row["positive"] for row in rows)]))
    position = {text: index for index, text in enumerate(candidates)}
    query_embeddings = prepare(encoder.encode(queries, batch_size=batch_size, show_progress_bar=True,
                                              prompt_name="query"), "cosine")
    candidate_embeddings = prepare(encoder.encode(candidates, batch_size=batch_size, show_progress_bar=True,
                                                  prompt_name="document"), "cosine")
    max_positives = max(len(found) for found in positives_of.values())
    depth = settings.depth(max_positives)
    # Room for the anchor's positives, and for its own text when it is a candidate: neither is ever its negative.
    room = max_positives + any(query in position for query in queries)
    scores, indices = search(query_embeddings, candidate_embeddings, depth + room, settings.use_faiss)
    positive_scores = [[float(query_embeddings[q] @ candidate_embeddings[position[text]]) for text in positives_of[query]]
                       for q, query in enumerate(queries)]
    if cross_encoder is not None and settings.filters_scores:
        scores, positive_scores = cross_encoder_scores(cross_encoder, queries, positives_of, candidates, indices,
                                                       batch_size)
    rng = random.Random(settings.seed)
    mined = []
    for q, query in enumerate(queries):
        excluded = {position[text] for text in positives_of[query]} | ({position[query]} if query in position else set())
        kept = kept_candidates(scores[q].tolist(), indices[q].tolist(), excluded, min(positive_scores[q]), settings)
        window = kept[settings.range_min:depth]
        if len(window) < settings.num_negatives:
            continue
        chosen = window[:settings.num_negatives] if settings.sampling == "top" else sorted(
            rng.sample(window, settings.num_negatives), key=lambda candidate: -candidate[1])
        for positive, positive_score in zip(positives_of[query], positive_scores[q]):
            mined.append({"anchor": query, "positive": positive,
                          **{f"negative_{i + 1}": candidates[index] for i, (index, _) in enumerate(chosen)},
                          "scores": [positive_score, *(score for _, score in chosen)]})
    log.info("mined %d negatives for %d of %d rows (%d distinct anchors)", settings.num_negatives, len(mined),
             len(rows), len(queries))
    if not mined:
        raise DataError(f"mining found {settings.num_negatives} negatives for none of the {len(rows)} rows: loosen "
                        "the filters (margins, score bounds, range) or ask for fewer negatives")
    return mined


def kept_candidates(scores: list[float], indices: list[int], excluded: set[int], positive_score: float,
                    settings: MiningSettings) -> list[tuple[int, float]]:
    """(candidate index, score) of the candidates that pass the filters, best first."""
    thresholds = [positive_score - settings.absolute_margin if settings.absolute_margin is not None else None,
                  positive_score - abs(positive_score) * settings.relative_margin
                  if settings.relative_margin is not None else None,
                  settings.max_score]
    ceiling = min((value for value in thresholds if value is not None), default=float("inf"))
    kept = [(index, score) for index, score in zip(indices, scores)
            if index >= 0 and index not in excluded and score <= ceiling
            and (settings.min_score is None or score >= settings.min_score)]
    return sorted(kept, key=lambda candidate: -candidate[1])


def search(queries: torch.Tensor, candidates: torch.Tensor, k: int, use_faiss: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-first inner products (cosines of unit vectors) of the k best candidates of each query."""
    if not use_faiss:
        return top_k_cosine(queries, candidates, k)
    try:
        import faiss
    except ImportError:
        raise ConfigError("mining.use_faiss=true needs faiss: pip install faiss-cpu") from None
    index = faiss.IndexFlatIP(candidates.shape[1])
    index.add(candidates.numpy())
    scores, indices = index.search(queries.numpy(), min(k, len(candidates)))
    return torch.from_numpy(scores), torch.from_numpy(indices)


def cross_encoder_scores(cross_encoder, queries: list[str], positives_of: dict[str, list[str]],
                         candidates: list[str], indices: torch.Tensor, batch_size: int
                         ) -> tuple[torch.Tensor, list[list[float]]]:
    """The cross-encoder's scores of each query's searched candidates and of its positives."""
    pairs = [(query, candidates[index]) for query, row in zip(queries, indices.tolist()) for index in row if index >= 0]
    predicted = iter(cross_encoder.predict(pairs, batch_size=batch_size, show_progress_bar=True).tolist())
    scores = torch.tensor([[next(predicted) if index >= 0 else float("-inf") for index in row]
                           for row in indices.tolist()])
    positive_pairs = [(query, positive) for query in queries for positive in positives_of[query]]
    positive_predicted = iter(cross_encoder.predict(positive_pairs, batch_size=batch_size).tolist())
    return scores, [[next(positive_predicted) for _ in positives_of[query]] for query in queries]


def mine(cfg: DictConfig) -> Path:
    """`scripts/mine_hard_negatives.py`: mine the (anchor, positive) rows of `cfg.data` and write them as jsonl,
    with a summary of what was kept beside it."""
    datamodule = build_datamodule(cfg)
    rows, origin = datamodule.load_train(datamodule.format)
    log.info("%d (anchor, positive) rows from %s", len(rows), origin)
    corpus = read_corpus_texts(cfg.corpus_path) if cfg.corpus_path else None
    cross_encoder = CrossEncoder.load(cfg.cross_encoder_path) if cfg.cross_encoder_path else None
    settings = MiningSettings(**cfg.mining)
    mined = mine_hard_negatives(SentenceEncoder.load(cfg.model_path), rows, settings, corpus=corpus,
                                cross_encoder=cross_encoder, batch_size=cfg.batch_size)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in mined), encoding="utf-8")
    write_json(output.with_suffix(".summary.json"), {"rows": len(rows), "mined_rows": len(mined),
                                                     "corpus": len(corpus or []), "origin": origin})
    log.info("wrote %d rows to %s", len(mined), output)
    return output


def read_corpus_texts(path: str) -> list[str]:
    """Candidate texts: a .jsonl corpus (BEIR's corpus.jsonl, its `text` field) or a text file, one per line."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if Path(path).suffix == ".jsonl":
        return [json.loads(line)["text"] for line in lines]
    return lines
