"""Hard negatives from the structure of the data rather than from a model: a row's negative is the positive of another
row of its group (`data.group_negatives`). In MedQuAD a focus (a disease, a drug) groups the answers to its question
types, so a sibling answer is about the right subject and answers another question: what in-batch negatives, almost
all about other subjects, rarely teach. For the other rows the negative is a positive of another group, so that the
share of sibling negatives can be chosen.

A row's negative is never one of its anchor's own positives (a question asked on several rows), nor its positive's
text under another id.
"""

import random
from collections import defaultdict
from dataclasses import dataclass

from embedlab.errors import ConfigError, DataError

# Where a row keeps its group while its negative is drawn; no loss reads it.
NEGATIVE_GROUP_COLUMN = "_negative_group"


@dataclass(frozen=True)
class GroupNegatives:
    """`field`: the source field that groups rows (rows whose field is empty form no group). `share`: the chance that
    a row with a sibling gets a sibling as its negative; the others get a positive of another group."""

    field: str
    share: float = 1.0

    def __post_init__(self):
        if not 0 <= self.share <= 1:
            raise ConfigError(f"data.group_negatives.share must be between 0 and 1, got {self.share}")

    def add_to(self, rows: list[dict], seed: int) -> list[dict]:
        """The rows, each with a `negative` column drawn with `seed`, and without the group column."""
        siblings: dict[str, list[str]] = defaultdict(list)
        groups_of: dict[str, set[str]] = defaultdict(set)
        own: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            group, positive = row[NEGATIVE_GROUP_COLUMN], row["positive"]
            if group and group not in groups_of[positive]:
                siblings[group].append(positive)
            groups_of[positive].add(group)
            own[row["anchor"]].add(positive)
        positives = list(groups_of)
        rng = random.Random(seed)
        out = []
        for row in rows:
            group = row.pop(NEGATIVE_GROUP_COLUMN)
            excluded = own[row["anchor"]]
            candidates = [text for text in siblings.get(group, ()) if text not in excluded] if group else []
            if candidates and rng.random() < self.share:
                negative = rng.choice(candidates)
            else:
                negative = _other_group(positives, groups_of, group, excluded, rng)
            out.append({**row, "negative": negative})
        return out


def _other_group(positives: list[str], groups_of: dict[str, set[str]], group: str, excluded: set[str],
                 rng: random.Random) -> str:
    """A positive outside `group` and `excluded`, drawn uniformly: by rejection first, then from the filtered list."""
    def allowed(text: str) -> bool:
        return text not in excluded and not (group and group in groups_of[text])

    for _ in range(32):
        text = rng.choice(positives)
        if allowed(text):
            return text
    candidates = [text for text in positives if allowed(text)]
    if not candidates:
        raise DataError("data.group_negatives: every positive belongs to the row's own group or anchor; a negative "
                        "from another group needs at least two groups")
    return rng.choice(candidates)
