"""Augmented SBERT's silver set: sample unlabelled sentence pairs, then let a cross-encoder (the teacher) score them.

Sampling strategies, each pairing every pool sentence with up to `top_k` partners:
- `random`: partners drawn at random; mostly dissimilar pairs.
- `bm25`: the partners sharing the most rare words (the bm25s library).
- `semantic`: the nearest neighbours under a bi-encoder's cosine.
Pairs are unordered and unique; a sentence is never paired with itself, and pairs already in gold are dropped.
"""

import hashlib
import json
import logging
import random
from pathlib import Path

from embedlab.evaluation.search import top_k_cosine

log = logging.getLogger(__name__)
STRATEGIES = ("random", "bm25", "semantic")


def unordered(first: str, second: str) -> tuple[str, str]:
    return (first, second) if first <= second else (second, first)


def sample_pairs(sentences: list[str], strategy: str, top_k: int, seed: int = 0, encoder=None,
                 exclude: set[tuple[str, str]] = frozenset(), batch_size: int = 64) -> list[tuple[str, str]]:
    """Candidate pairs from `sentences`, without self-pairs, repeats, or any pair in `exclude` (either order)."""
    sentences = list(dict.fromkeys(sentences))
    if strategy == "random":
        partners = _random_partners(sentences, top_k, seed)
    elif strategy == "bm25":
        partners = _bm25_partners(sentences, top_k)
    elif strategy == "semantic":
        if encoder is None:
            raise ValueError("the semantic strategy needs a bi-encoder")
        partners = _semantic_partners(sentences, top_k, encoder, batch_size)
    else:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    excluded = {unordered(*pair) for pair in exclude}
    pairs: dict[tuple[str, str], None] = {}
    for index, candidates in enumerate(partners):
        for partner in candidates:
            if partner != index:
                pair = unordered(sentences[index], sentences[partner])
                if pair not in excluded:
                    pairs[pair] = None
    return list(pairs)


def _random_partners(sentences: list[str], top_k: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(len(sentences)), min(top_k + 1, len(sentences))) for _ in sentences]


def _bm25_partners(sentences: list[str], top_k: int) -> list[list[int]]:
    import bm25s

    tokens = bm25s.tokenize(sentences, stopwords="en", show_progress=False)
    index = bm25s.BM25()
    index.index(tokens, show_progress=False)
    found, scores = index.retrieve(tokens, k=min(top_k + 1, len(sentences)), show_progress=True)
    # A zero score shares no word with the query: no lexical evidence, so no candidate.
    return [[int(i) for i, score in zip(row, row_scores) if score > 0] for row, row_scores in zip(found, scores)]


def _semantic_partners(sentences: list[str], top_k: int, encoder, batch_size: int) -> list[list[int]]:
    embeddings = encoder.encode(sentences, batch_size=batch_size, show_progress_bar=True)
    _, indices = top_k_cosine(embeddings, embeddings, top_k + 1)
    return indices.tolist()


def cache_key(**inputs) -> str:
    """A short digest of everything that determines a silver set, so a change of any input relabels."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_label(cache_file: Path, pairs_factory, teacher_factory, batch_size: int = 64) -> list[dict]:
    """Silver rows from `cache_file` when present, else sampled, scored by the teacher and cached."""
    if cache_file.exists():
        rows = [json.loads(line) for line in cache_file.read_text(encoding="utf-8").splitlines()]
        log.info("silver: reusing %d labelled pairs from %s", len(rows), cache_file)
        return rows
    pairs = pairs_factory()
    teacher = teacher_factory()
    if teacher.num_labels != 1:
        raise ValueError(f"the teacher must score pairs with one output, it has {teacher.num_labels}")
    scores = teacher.predict(pairs, batch_size=batch_size, show_progress_bar=True).tolist()
    rows = [{"sentence1": first, "sentence2": second, "score": score} for (first, second), score in zip(pairs, scores)]
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    staging = cache_file.with_suffix(".partial")
    staging.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    staging.replace(cache_file)
    log.info("silver: labelled %d pairs, cached in %s", len(rows), cache_file)
    return rows
