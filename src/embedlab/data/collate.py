"""Turning rows into model inputs inside DataLoader workers, so the training step only runs the model."""

from dataclasses import dataclass

import torch

from embedlab.encoder import Tokenize


@dataclass
class Collator:
    """Rows to {"features": {column: tokenised batch}, "target": tensor or absent}, padded per column."""

    tokenize: Tokenize
    text_columns: list[str]
    target_column: str | None = None

    def __call__(self, rows: list[dict]) -> dict:
        batch = {"features": {column: self.tokenize([row[column] for row in rows]) for column in self.text_columns}}
        if self.target_column is not None:
            dtype = torch.float32 if self.target_column == "score" else torch.long
            batch["target"] = torch.tensor([row[self.target_column] for row in rows], dtype=dtype)
        return batch
