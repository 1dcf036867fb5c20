"""The evaluation sets as plain containers: scored pairs (STS), labelled pairs, and queries against a corpus."""

from dataclasses import dataclass


@dataclass
class ScoredPairs:
    """Sentence pairs with a gold similarity score each (any scale: only the ranking and linear fit matter)."""

    sentence1: list[str]
    sentence2: list[str]
    scores: list[float]

    def __post_init__(self):
        if not (len(self.sentence1) == len(self.sentence2) == len(self.scores)):
            raise ValueError("sentence1, sentence2 and scores must have the same length")

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class LabelledPairs:
    """Sentence pairs with a binary label each: 1 for a positive pair (entailment, duplicate), else 0."""

    sentence1: list[str]
    sentence2: list[str]
    labels: list[int]

    def __post_init__(self):
        if not (len(self.sentence1) == len(self.sentence2) == len(self.labels)):
            raise ValueError("sentence1, sentence2 and labels must have the same length")
        if not set(self.labels) <= {0, 1}:
            raise ValueError(f"labels must be 0 or 1, got {sorted(set(self.labels) - {0, 1})[:5]}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ClassifiedPairs:
    """Sentence pairs with a class id each, in [0, num_classes): NLI's entailment, neutral, contradiction."""

    sentence1: list[str]
    sentence2: list[str]
    labels: list[int]
    num_classes: int

    def __post_init__(self):
        if not (len(self.sentence1) == len(self.sentence2) == len(self.labels)):
            raise ValueError("sentence1, sentence2 and labels must have the same length")
        outside = sorted({label for label in self.labels if not 0 <= label < self.num_classes})
        if outside:
            raise ValueError(f"labels must be in [0, {self.num_classes}), got {outside[:5]}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RetrievalSet:
    """Queries and a corpus by id, and graded relevance judgements: qrels[query_id][doc_id] = gain (0 = judged
    irrelevant). Queries without any judgement are dropped, as trec_eval does."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def __post_init__(self):
        unknown = [doc_id for judged in self.qrels.values() for doc_id in judged if doc_id not in self.corpus]
        if unknown:
            raise ValueError(f"{len(unknown)} judged documents are not in the corpus, e.g. {unknown[0]!r}")
        self.queries = {query_id: text for query_id, text in self.queries.items() if self.qrels.get(query_id)}
