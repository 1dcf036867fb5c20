"""Augmented SBERT's training data: the gold pairs plus a silver set that a cross-encoder (the teacher) labels.

Silver candidates are sampled from a pool of sentences, each paired with up to `top_k` partners:
- `random`: partners drawn at random; mostly dissimilar pairs.
- `bm25`: the partners sharing the most rare words (the bm25s library).
- `semantic`: the nearest neighbours under a bi-encoder's cosine.
Pairs are unordered and unique; a sentence is never paired with itself, and pairs already in gold are dropped.
"""

import hashlib
import json
import logging
import os
import random
from pathlib import Path

from embedlab.data.sources import load_source
from embedlab.data.tables import PairsDataModule
from embedlab.errors import ConfigError
from embedlab.modeling.cross_encoder import CrossEncoder
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.search import top_k_cosine

log = logging.getLogger(__name__)
STRATEGIES = ("random", "bm25", "semantic")


class SilverDataModule(PairsDataModule):
    """Gold (sentence1, sentence2, score) rows from `source`, plus silver pairs sampled from a sentence pool.

    The pool of sentences is, by `pool`: `source`, every row of the source table (also those `max_rows` leaves out
    of gold); `gold`, the gold rows recombined; or a source mapping of its own (an unlabelled pair table with
    `sentence1` and `sentence2` columns). The labelled silver set is cached in `cache_dir` under a key
    of all its inputs, so a rerun with the same inputs does not relabel.
    """

    def __init__(self, source: dict, cross_encoder_path: str, cache_dir: str, strategy: str = "semantic",
                 top_k: int = 3, pool: str | dict = "source", bi_encoder_path: str | None = None,
                 include_gold: bool = True, label_batch_size: int = 64, **kwargs):
        super().__init__(source=source, **kwargs)
        if strategy not in STRATEGIES:
            raise ConfigError(f"data.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if strategy == "semantic" and not bi_encoder_path:
            raise ConfigError("data.strategy=semantic needs data.bi_encoder_path (the model that finds neighbours)")
        self.cross_encoder_path = cross_encoder_path
        self.cache_dir = Path(cache_dir)
        self.strategy = strategy
        self.top_k = top_k
        self.pool = pool
        self.bi_encoder_path = bi_encoder_path
        self.include_gold = include_gold
        self.label_batch_size = label_batch_size
        self.silver_size = 0

    def prepare_data(self) -> None:
        """Sampling and labelling, once per machine (Lightning runs this on one process and then lets the others
        read the cache): two models would otherwise load on every process, each labelling the same pairs."""
        self._gold_and_silver()

    def load_train(self, format: str) -> tuple[list[dict], str]:
        gold, silver, description = self._gold_and_silver()
        self.silver_size = len(silver)
        return (gold if self.include_gold else []) + silver, description

    def _gold_and_silver(self) -> tuple[list[dict], list[dict], str]:
        """The gold rows, the silver rows (from the cache, or sampled and labelled into it) and where they came
        from."""
        everything, origin = self.load_all(self.format)
        gold, gold_origin = self._subset(everything, origin)
        if self.pool == "source":
            pool_rows, pool_origin = everything, origin
        elif self.pool == "gold":
            pool_rows, pool_origin = gold, "the gold pairs recombined"
        else:
            pool_rows, pool_origin = load_source(self.pool, f"data '{self.name}' pool", self.on_bad_row)
        sentences = sorted({row[column] for row in pool_rows for column in ("sentence1", "sentence2")})
        gold_pairs = {(row["sentence1"], row["sentence2"]) for row in gold}
        key = cache_key(gold=sorted(gold_pairs), pool=sentences, strategy=self.strategy, top_k=self.top_k,
                        seed=self.seed, teacher=_fingerprint(self.cross_encoder_path),
                        bi_encoder=_fingerprint(self.bi_encoder_path) if self.strategy == "semantic" else None)
        silver = load_or_label(
            self.cache_dir / f"silver-{self.strategy}-{key}.jsonl",
            pairs_factory=lambda: sample_pairs(
                sentences, self.strategy, self.top_k, seed=self.seed, exclude=gold_pairs,
                encoder=SentenceEncoder.load(self.bi_encoder_path) if self.strategy == "semantic" else None),
            teacher_factory=lambda: CrossEncoder.load(self.cross_encoder_path),
            batch_size=self.label_batch_size)
        return gold, silver, (f"{len(gold)} gold from {gold_origin} + {len(silver)} silver ({self.strategy}) "
                              f"from {pool_origin}")

    def stats(self) -> dict[str, float]:
        return {"silver/size": self.silver_size}


def _fingerprint(model_path: str | None) -> dict | None:
    """Path, size and modification time of a model's weights: a retrained teacher changes the cache key."""
    if model_path is None:
        return None
    weights = sorted(Path(model_path).glob("*.safetensors"))
    return {"path": str(Path(model_path).resolve()),
            "weights": [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]}


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
    # A name of this process's own: on a file system shared by several machines, each may be labelling.
    staging = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.partial")
    staging.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    staging.replace(cache_file)
    log.info("silver: labelled %d pairs, cached in %s", len(rows), cache_file)
    return rows
