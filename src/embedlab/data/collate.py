"""Turning rows into model inputs inside DataLoader workers, so the training step only runs the model."""

from collections.abc import Callable
from dataclasses import dataclass

import torch


def target_tensor(rows: list[dict], column: str) -> torch.Tensor:
    dtype = torch.float32 if column == "score" else torch.long
    return torch.tensor([row[column] for row in rows], dtype=dtype)


@dataclass
class Collator:
    """Rows to {"features": {column: tokenised batch}, "target": tensor or absent, "size": rows}, padded per column."""

    tokenize: Callable[[list[str]], dict]
    text_columns: list[str]
    target_column: str | None = None

    def __call__(self, rows: list[dict]) -> dict:
        batch = {"features": {column: self.tokenize([row[column] for row in rows]) for column in self.text_columns},
                 "size": len(rows)}
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
