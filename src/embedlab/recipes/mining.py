"""Hard-negative mining: for each (anchor, positive), the corpus texts a bi-encoder ranks high that are not the answer.

Three filters guard against false negatives (texts that are in fact correct answers):
- a rank range: skip the very top ranks, where unlabelled positives gather, and look no deeper than `max_rank`;
- a margin: a negative must score at least `margin` below the anchor's own positive;
- optionally a cross-encoder: a negative the cross-encoder scores above `max_cross_encoder_score` is dropped.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from embedlab.assembly import build_datamodule
from embedlab.errors import ConfigError
from embedlab.modeling.cross_encoder import CrossEncoder
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.search import top_k_cosine

log = logging.getLogger(__name__)


@dataclass
class MiningFilters:
    num_negatives: int = 3
    min_rank: int = 0           # 0-based, inclusive: 0 allows the best-ranked candidate
    max_rank: int = 50          # exclusive
    margin: float = 0.0         # the negative must score <= positive score - margin
    max_cross_encoder_score: float | None = None


def mine_hard_negatives(encoder, rows: list[dict], filters: MiningFilters, corpus: list[str] | None = None,
                        cross_encoder=None, batch_size: int = 64) -> list[dict]:
    """Rows `(anchor, positive, negative_1..n)`; rows that find fewer than n negatives are left out.

    The candidates are the positives of all rows plus `corpus`. A candidate equal to the row's anchor, or to a
    positive of any row with the same anchor, is never its negative: NLI repeats a premise across annotation rounds,
    each round with its own entailed hypothesis, and those are positives, not negatives.
    """
    if filters.min_rank >= filters.max_rank:
        raise ConfigError(f"filters.min_rank ({filters.min_rank}) must be below max_rank ({filters.max_rank})")
    if filters.max_cross_encoder_score is not None and cross_encoder is None:
        raise ConfigError("filters.max_cross_encoder_score needs a cross-encoder (cross_encoder_path)")
    candidates = list(dict.fromkeys([row["positive"] for row in rows] + list(corpus or [])))
    position = {text: index for index, text in enumerate(candidates)}
    anchors = encoder.encode([row["anchor"] for row in rows], batch_size=batch_size, show_progress_bar=True)
    candidate_embeddings = encoder.encode(candidates, batch_size=batch_size, show_progress_bar=True)
    positive_scores = F.cosine_similarity(
        anchors, candidate_embeddings[torch.tensor([position[row["positive"]] for row in rows])])
    positives_of: dict[str, set[str]] = {}
    for row in rows:
        positives_of.setdefault(row["anchor"], set()).add(row["positive"])
    # Extra places for the candidates that can never be negatives: the anchor and its positives.
    excluded_at_most = 1 + max(len(positives) for positives in positives_of.values())
    scores, indices = top_k_cosine(anchors, candidate_embeddings, filters.max_rank + excluded_at_most)

    proposals = []
    for row, positive_score, row_scores, row_indices in zip(rows, positive_scores.tolist(), scores.tolist(),
                                                           indices.tolist()):
        excluded = positives_of[row["anchor"]] | {row["anchor"]}
        ranked = [(candidates[i], s) for i, s in zip(row_indices, row_scores) if candidates[i] not in excluded]
        window = ranked[filters.min_rank:filters.max_rank]
        proposals.append([text for text, score in window if score <= positive_score - filters.margin])

    if cross_encoder is not None and filters.max_cross_encoder_score is not None:
        proposals = _drop_likely_positives(cross_encoder, rows, proposals, filters, batch_size)
    mined = []
    for row, negatives in zip(rows, proposals):
        if len(negatives) >= filters.num_negatives:
            mined.append({"anchor": row["anchor"], "positive": row["positive"],
                          **{f"negative_{i + 1}": text for i, text in enumerate(negatives[:filters.num_negatives])}})
    log.info("mined %d negatives for %d of %d rows", filters.num_negatives, len(mined), len(rows))
    return mined


def _drop_likely_positives(cross_encoder, rows, proposals, filters: MiningFilters, batch_size: int) -> list[list[str]]:
    # Only as many candidates per row as could be kept are scored: the cross-encoder is the expensive part.
    wanted = [(i, text) for i, texts in enumerate(proposals) for text in texts[:filters.num_negatives * 2]]
    scores = cross_encoder.predict([(rows[i]["anchor"], text) for i, text in wanted], batch_size=batch_size,
                                   show_progress_bar=True)
    kept = [[] for _ in proposals]
    for (i, text), score in zip(wanted, scores.tolist()):
        if score <= filters.max_cross_encoder_score:
            kept[i].append(text)
    return kept


def mine(cfg: DictConfig) -> Path:
    """`scripts/mine_hard_negatives.py`: mine the (anchor, positive) rows of `cfg.data` and write them as jsonl."""
    datamodule = build_datamodule(cfg)
    rows, origin = datamodule.load_train(datamodule.format)
    log.info("%d (anchor, positive) rows from %s", len(rows), origin)
    corpus = Path(cfg.corpus_path).read_text(encoding="utf-8").splitlines() if cfg.corpus_path else None
    cross_encoder = CrossEncoder.load(cfg.cross_encoder_path) if cfg.cross_encoder_path else None
    mined = mine_hard_negatives(SentenceEncoder.load(cfg.model_path), rows, MiningFilters(**cfg.filters),
                                corpus=corpus, cross_encoder=cross_encoder, batch_size=cfg.batch_size)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in mined), encoding="utf-8")
    log.info("wrote %d rows to %s", len(mined), output)
    return output
