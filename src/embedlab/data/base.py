"""The shared shape of every training data module: a train set in the columns a loss needs, plus evaluation pairs."""

import logging
import os
from collections.abc import Callable, Mapping
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader

from embedlab.data.sampler import ShardedBatchSampler
from embedlab.data.sources import load_source
from embedlab.errors import ConfigError, DataError
from embedlab.losses.signature import choose_format

log = logging.getLogger(__name__)
EVAL_COLUMNS = ["sentence1", "sentence2"]


class EmbeddingDataModule(L.LightningDataModule):
    """Subclasses name the column sets they can produce in `formats` and load rows in `load_train(format)`.

    `fit_loss` runs at start-up, before any data loads: it picks the format that fits the loss or fails naming
    both sides. Evaluation sets are (sentence1, sentence2, <evaluation.target>) sources under `evaluation`, where
    the target is a `score` (STS) or a `label` (pair classification, names mapped through `label_names`).
    The model decides how rows become tensors: `make_collator(text_columns, target_column)` is set from it; the
    collator runs in the DataLoader's `num_workers` worker processes, so tokenising overlaps the training step.
    A subclass that streams its train rows sets `streaming` and provides `train_dataloader` itself.
    """

    formats: ClassVar[dict[str, tuple[str, ...]]] = {}
    streaming = False

    def __init__(self, name: str, batch_size: int = 32, eval_batch_size: int = 64, num_workers: int = 0,
                 seed: int = 42, evaluation: Mapping | None = None, on_bad_row: str = "error",
                 group_by_length: bool = False):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.evaluation = evaluation or {}
        # error: a malformed row stops the run naming its file and line; skip: it is dropped, counted and warned of.
        self.on_bad_row = on_bad_row
        self.group_by_length = group_by_length
        self.format: str | None = None
        self.make_collator: Callable[[list[str], str | None], Callable] | None = None
        self.train_rows: list[dict] | None = None
        self.eval_rows: dict[str, list[dict]] = {}

    def fit_loss(self, loss_name: str, loss_class) -> list[str]:
        """Choose the format for this loss; returns the text columns in the order the loss reads them."""
        signature = loss_class.signature
        self.format = choose_format(loss_name, signature, self.name, self.formats)
        self.unique_texts = loss_class.uses_in_batch_negatives
        self.text_columns = signature.text_columns(self.formats[self.format])
        self.target_column = signature.target
        return self.text_columns

    def load_train(self, format: str) -> tuple[list[dict], str]:
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Figures about the data worth reporting beside the metrics, keyed like results.json."""
        return {}

    def setup(self, stage: str) -> None:
        if self.format is None or self.make_collator is None:
            raise ConfigError("call fit_loss() and set make_collator before setting up the data module")
        if stage == "fit" and self.train_rows is None and not self.streaming:
            self.train_rows, origin = self.load_train(self.format)
            if not self.train_rows:
                raise DataError(f"data '{self.name}': no training rows in {origin}")
            log.info("data %s: %d %s rows from %s", self.name, len(self.train_rows), self.format, origin)
        for split in {"fit": ["dev"], "validate": ["dev"], "test": ["test"]}.get(stage, []):
            if split in self.evaluation and split not in self.eval_rows:
                self.eval_rows[split] = self._load_eval(split)

    def train_dataloader(self) -> DataLoader:
        sampler = ShardedBatchSampler(
            [tuple(row[column] for column in self.text_columns) for row in self.train_rows],
            batch_size=self.batch_size, unique_texts=self.unique_texts, seed=self.seed,
            rank=self._rank(), world_size=self._world_size(), batches_done=self._batches_done,
            group_by_length=self.group_by_length)
        use_single_threaded_tokenizers_in_workers(self.num_workers)
        # Its own generator: creating an iterator then draws nothing from the global one that dropout draws from,
        # so a resumed run draws the dropout masks the uninterrupted one draws.
        return DataLoader(self.train_rows, batch_sampler=sampler, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed),
                          collate_fn=self.collator(),
                          persistent_workers=self.num_workers > 0)

    def collator(self) -> Callable:
        return self.make_collator(self.text_columns, self.target_column)

    def _batches_done(self, epoch: int) -> int:
        """Batches of `epoch` an interrupted run trained on, when resuming it mid-epoch: Lightning restores its step
        counts but not the position of a plain DataLoader."""
        fit_loop = self.trainer.fit_loop if self.trainer is not None else None
        if fit_loop is None or not fit_loop.restarting or fit_loop.epoch_progress.current.processed != epoch:
            return 0
        return fit_loop.epoch_loop.batch_progress.current.completed

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("dev")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader | list:
        if split not in self.eval_rows:
            return []
        # Each process scores its own share; the metrics gather the shares before computing the correlation.
        rows = self.eval_rows[split][self._rank()::self._world_size()]
        collate = self.make_collator(EVAL_COLUMNS, self.evaluation.get("target", "score"))
        return DataLoader(rows, batch_size=self.eval_batch_size, collate_fn=collate)

    def _load_eval(self, split: str) -> list[dict]:
        name = self.evaluation["name"]
        rows, origin = load_source(self.evaluation[split], f"evaluation '{name}' {split}", self.on_bad_row)
        label_names = self.evaluation.get("label_names") or {}
        if self.evaluation.get("target", "score") == "label":
            unknown = {row["label"] for row in rows} - set(label_names) - set(label_names.values())
            rows = [row for row in rows if row["label"] not in unknown]
            for row in rows:
                row["label"] = int(label_names.get(row["label"], row["label"]))
            if unknown:
                log.warning("evaluation %s %s: skipped rows with labels %s", name, split, sorted(map(str, unknown)))
        log.info("evaluation %s %s: %d pairs from %s", name, split, len(rows), origin)
        # Similar lengths share a batch, so evaluation spends little on padding.
        return sorted(rows, key=lambda row: len(row["sentence1"]) + len(row["sentence2"]))

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def _world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1


def use_single_threaded_tokenizers_in_workers(num_workers: int) -> None:
    """With worker processes the workers are the parallelism: a fast tokenizer's own thread pool in each of them
    would only compete for the same cores (and, forked after use, warns and turns itself off anyway)."""
    if num_workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
