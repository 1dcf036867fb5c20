"""The cross-encoder: a text pair scored jointly by a Hugging Face sequence-classification model.

A saved folder is a plain Hugging Face checkpoint plus the sentence-transformers settings (activation and maximum
length), so `sentence_transformers.cross_encoder.CrossEncoder(dir)` loads it and scores the same.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification

from embedlab.modeling.batching import in_length_order
from embedlab.modeling.dropout import use_dropout_masks
from embedlab.modeling.model_files import (
    default_max_seq_length,
    load_pretrained,
    package_version,
    resolve_location,
    save_atomically,
)
from embedlab.run_folder import write_json

SIGMOID = "torch.nn.modules.activation.Sigmoid"
IDENTITY = "torch.nn.modules.linear.Identity"


@dataclass
class TokenizePairs:
    """Joint tokenisation of (first, second) pairs, small enough to send to DataLoader workers."""

    tokenizer: object
    max_seq_length: int

    def __call__(self, first: list[str], second: list[str]) -> dict[str, Tensor]:
        return dict(self.tokenizer(first, second, padding=True, truncation="longest_first",
                                   max_length=self.max_seq_length, return_tensors="pt"))


class CrossEncoder(nn.Module):
    """Scores pairs: one logit (a similarity, sigmoid at prediction) or one logit per class (raw logits)."""

    def __init__(self, model: nn.Module, tokenizer, max_seq_length: int = 512):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    @property
    def num_labels(self) -> int:
        return self.model.config.num_labels

    @classmethod
    def from_pretrained(cls, name_or_path: str, num_labels: int | None = None, max_seq_length: int | None = None,
                        trust_remote_code: bool = False, dropout_masks: str = "torch") -> "CrossEncoder":
        """Load a cross-encoder folder, or start one from any backbone (the classification head starts random);
        `dropout_masks` as in `SentenceEncoder.from_pretrained`."""
        path = resolve_location(str(name_or_path))
        location = str(path) if path is not None else str(name_or_path)
        model, tokenizer = load_pretrained(location, AutoModelForSequenceClassification, trust_remote_code,
                                           **({"num_labels": num_labels} if num_labels else {}))
        use_dropout_masks(model, dropout_masks)
        if max_seq_length is None:
            max_seq_length = default_max_seq_length(model, tokenizer)
        return cls(model, tokenizer, max_seq_length=int(max_seq_length))

    load = from_pretrained

    @property
    def tokenize_pairs(self) -> TokenizePairs:
        return TokenizePairs(self.tokenizer, self.max_seq_length)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Raw logits, shape (batch, num_labels)."""
        return self.model(**features).logits

    def activation(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits.squeeze(-1)) if self.num_labels == 1 else logits

    @torch.inference_mode()
    def predict(self, pairs: list[tuple[str, str]], batch_size: int = 32, show_progress_bar: bool = False) -> Tensor:
        """Scores in the order of `pairs`: shape (n,) for one label, (n, num_labels) logits otherwise."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device

        def score(batch: list[tuple[str, str]]) -> Tensor:
            features = self.tokenize_pairs([first for first, _ in batch], [second for _, second in batch])
            return self.activation(self({k: v.to(device) for k, v in features.items()})).float().cpu()

        scores = in_length_order(pairs, lambda pair: len(pair[0]) + len(pair[1]), batch_size, score, "predict",
                                 show_progress_bar)
        self.train(was_training)
        if scores is None:
            return torch.empty(0) if self.num_labels == 1 else torch.empty(0, self.num_labels)
        return scores

    def rank(self, query: str, documents: list[str], batch_size: int = 32, top_k: int | None = None
             ) -> list[tuple[int, float]]:
        """(document index, score) pairs, best first; needs a one-label (similarity) cross-encoder."""
        if self.num_labels != 1:
            raise ValueError(f"rank needs a cross-encoder with one output, this one has {self.num_labels}")
        scores = self.predict([(query, document) for document in documents], batch_size=batch_size)
        best = torch.argsort(scores, descending=True)[:top_k]
        return [(int(index), float(scores[index])) for index in best]

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the folder atomically: a failed save leaves an older model intact."""
        return save_atomically(directory, self._write_folder)

    def _write_folder(self, directory: Path) -> None:
        self.model.save_pretrained(directory, safe_serialization=True)
        # sentence-transformers takes a plain cross-encoder folder's maximum length from the tokenizer.
        self.tokenizer.model_max_length = self.max_seq_length
        self.tokenizer.save_pretrained(directory)
        write_json(directory / "config_sentence_transformers.json", {
            "__version__": {"embedlab": package_version(), "pytorch": torch.__version__},
            "model_type": "CrossEncoder",
            "activation_fn": SIGMOID if self.num_labels == 1 else IDENTITY,
            "prompts": {},
            "default_prompt_name": None,
        })
