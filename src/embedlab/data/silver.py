"""Augmented SBERT's training data: the gold pairs plus a silver set labelled by a cross-encoder teacher."""

from pathlib import Path

from embedlab.cross_encoder import CrossEncoder
from embedlab.data.scored_pairs import PairsDataModule
from embedlab.data.sources import load_source
from embedlab.encoder import SentenceEncoder
from embedlab.errors import ConfigError
from embedlab.silver import STRATEGIES, cache_key, load_or_label, sample_pairs


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

    def load_train(self, format: str) -> tuple[list[dict], str]:
        everything, origin = self.load_all(format)
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
        self.silver_size = len(silver)
        rows = (gold if self.include_gold else []) + silver
        return rows, f"{len(gold)} gold from {gold_origin} + {len(silver)} silver ({self.strategy}) from {pool_origin}"

    def stats(self) -> dict[str, float]:
        return {"silver/size": self.silver_size}


def _fingerprint(model_path: str | None) -> dict | None:
    """Path, size and modification time of a model's weights: a retrained teacher changes the cache key."""
    if model_path is None:
        return None
    weights = sorted(Path(model_path).glob("*.safetensors"))
    return {"path": str(Path(model_path).resolve()),
            "weights": [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]}
