"""Word-deletion noise for TSDAE: the encoder sees a sentence with most of its words gone, the decoder rebuilds it.

The noise is drawn in the collator from a generator seeded by (seed, epoch, row index), so it is the same whichever
DataLoader worker collates a row, differs between epochs, and repeats exactly when a run is repeated.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass

from embedlab.errors import ConfigError


def delete_words(text: str, ratio: float, rng: random.Random) -> str:
    """Drop each whitespace-separated word with probability `ratio`, keeping at least one word."""
    words = text.split()
    if not words:
        return text
    kept = [word for word in words if rng.random() >= ratio]
    if not kept:
        kept = [rng.choice(words)]
    return " ".join(kept)


def noise_generator(seed: int, epoch: int, index: int) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so the draws do not depend on PYTHONHASHSEED.
    return random.Random(f"{seed}/{epoch}/{index}")


def check_deletion_ratio(ratio: float) -> float:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"model.deletion_ratio must be in [0, 1), got {ratio}")
    return float(ratio)


@dataclass
class DenoisingCollator:
    """Rows {"text", "epoch", "index"} to {"features": {"noisy": ..., "text": ...}, "size": rows}: the corrupted
    sentences for the encoder and the originals the decoder must rebuild, each tokenised and padded."""

    tokenize: Callable[[list[str]], dict]
    deletion_ratio: float
    seed: int

    def __call__(self, rows: list[dict]) -> dict:
        originals = [row["text"] for row in rows]
        noisy = [delete_words(row["text"], self.deletion_ratio, noise_generator(self.seed, row["epoch"], row["index"]))
                 for row in rows]
        return {"features": {"noisy": self.tokenize(noisy), "text": self.tokenize(originals)}, "size": len(rows)}
