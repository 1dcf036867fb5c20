"""Turning rows into model inputs inside DataLoader workers, so the training step only runs the model."""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Targets that hold numbers to regress on; any other target holds class ids.
FLOAT_TARGETS = ("score", "scores")


def target_tensor(rows: list[dict], column: str) -> torch.Tensor:
    """The batch's targets: a score or class id per row, or a list of scores per row (`scores`: a teacher's)."""
    dtype = torch.float32 if column in FLOAT_TARGETS else torch.long
    return torch.tensor([row[column] for row in rows], dtype=dtype)


@dataclass
class Collator:
    """Rows to {"features": {column: tokenised batch}, "target": tensor or absent, "size": rows}, padded per column;
    each column's texts behind its prompt in `prompts`, if it has one."""

    tokenize: Callable[[list[str]], dict]
    text_columns: list[str]
    target_column: str | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    # A guide model's own tokenisation, when it reads other token ids: its features come as "guide_features".
    guide_tokenize: Callable[[list[str]], dict] | None = None

    def __call__(self, rows: list[dict]) -> dict:
        texts = {column: [self.prompts.get(column, "") + row[column] for row in rows] for column in self.text_columns}
        batch = {"features": {column: self.tokenize(values) for column, values in texts.items()}, "size": len(rows)}
        if self.guide_tokenize is not None:
            batch["guide_features"] = {column: self.guide_tokenize(values) for column, values in texts.items()}
        if self.target_column is not None:
            batch["target"] = target_tensor(rows, self.target_column)
        return batch


@dataclass
class PairCollator:
    """Rows to {"features": one tokenised batch of (first, second) pairs, "target": tensor, "size": rows}."""

    tokenize_pairs: Callable[[list[str], list[str]], dict]
    text_columns: list[str]
    target_column: str

    def __call__(self, rows: list[dict]) -> dict:
        first, second = self.text_columns
        features = self.tokenize_pairs([row[first] for row in rows], [row[second] for row in rows])
        return {"features": features, "target": target_tensor(rows, self.target_column), "size": len(rows)}


@dataclass
class InputCollator:
    """Evaluation rows {"index", "input": (role, text)} to {"index": tensor, "features": the tokenised texts}, each
    text behind the prompt of its role (`prompted(text, role)`)."""

    tokenize: Callable[[list[str]], dict]
    prompted: Callable[[str, str | None], str]

    def __call__(self, rows: list[dict]) -> dict:
        texts = [self.prompted(row["input"][1], row["input"][0]) for row in rows]
        return {"index": torch.tensor([row["index"] for row in rows]), "features": self.tokenize(texts)}


@dataclass
class PairInputCollator:
    """Evaluation rows {"index", "input": (first, second)} to {"index": tensor, "features": the tokenised pairs}."""

    tokenize_pairs: Callable[[list[str], list[str]], dict]

    def __call__(self, rows: list[dict]) -> dict:
        first = [row["input"][0] for row in rows]
        second = [row["input"][1] for row in rows]
        return {"index": torch.tensor([row["index"] for row in rows]), "features": self.tokenize_pairs(first, second)}
