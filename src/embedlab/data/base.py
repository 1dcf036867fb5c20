"""The shared shape of every training data module: a train set in the columns a loss needs, and the inputs the
evaluators ask the model to embed (or score), shared out among the processes."""

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from embedlab.data.sampler import ShardedBatchSampler
from embedlab.errors import ConfigError, DataError
from embedlab.losses.signature import choose_format

log = logging.getLogger(__name__)


class EmbeddingDataModule(L.LightningDataModule):
    """Subclasses name the column sets they can produce in `formats` and load rows in `load_train(format)`.

    `fit_loss` runs at start-up, before any data loads: it picks the format that fits the loss or fails naming
    both sides. `eval_inputs` holds, per split ("dev", "test"), what the evaluators need the model to embed or
    score; each process gets its share, and the evaluation callback gathers the outputs.
    `prompts` puts a text before each value of a column, e.g. {anchor: "query: ", positive: "passage: "}.
    The model decides how rows become tensors (its `make_collator` and `make_eval_collator`); the collator runs in
    the DataLoader's `num_workers` worker processes, so tokenising overlaps the training step.
    A subclass that streams its train rows sets `streaming` and provides `train_dataloader` itself.
    """

    formats: ClassVar[dict[str, tuple[str, ...]]] = {}
    streaming = False

    def __init__(self, name: str, batch_size: int = 32, eval_batch_size: int = 64, num_workers: int = 0,
                 seed: int = 42, on_bad_row: str = "error", group_by_length: bool = False,
                 prompts: Mapping[str, str] | None = None, eval_inputs: Mapping[str, Sequence] | None = None):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        # error: a malformed row stops the run naming its file and line; skip: it is dropped, counted and warned of.
        self.on_bad_row = on_bad_row
        self.group_by_length = group_by_length
        # Text put before every value of a column in training, e.g. {anchor: "query: ", positive: "passage: "}.
        self.prompts = dict(prompts or {})
        self.eval_inputs = {split: list(inputs) for split, inputs in (eval_inputs or {}).items()}
        self.format: str | None = None
        self.train_rows: list[dict] | None = None

    def fit_loss(self, loss_name: str, loss_class) -> list[str]:
        """Choose the format for this loss; returns the text columns in the order the loss reads them."""
        signature = loss_class.signature
        self.format = choose_format(loss_name, signature, self.name, self.formats)
        self.unique_texts = loss_class.uses_in_batch_negatives
        self.text_columns = signature.text_columns(self.formats[self.format])
        self.target_column = signature.target
        unknown = sorted(set(self.prompts) - set(self.text_columns))
        if unknown:
            raise ConfigError(f"data '{self.name}': prompts for {unknown}, but loss '{loss_name}' reads the text "
                              f"columns {self.text_columns}")
        return self.text_columns

    def load_train(self, format: str) -> tuple[list[dict], str]:
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Figures about the data worth reporting beside the metrics, keyed like results.json."""
        return {}

    def setup(self, stage: str) -> None:
        if self.format is None:
            raise ConfigError("call fit_loss() before setting up the data module")
        if stage == "fit" and self.train_rows is None and not self.streaming:
            self.train_rows, origin = self.load_train(self.format)
            if not self.train_rows:
                raise DataError(f"data '{self.name}': no training rows in {origin}")
            log.info("data %s: %d %s rows from %s", self.name, len(self.train_rows), self.format, origin)
            if len(self.train_rows) < self.batch_size:
                log.warning("data %s: %d training rows, fewer than one batch (data.batch_size=%d): each epoch is one "
                            "short step", self.name, len(self.train_rows), self.batch_size)

    def train_dataloader(self) -> DataLoader:
        sampler = ShardedBatchSampler(
            [tuple(row[column] for column in self.text_columns) for row in self.train_rows],
            batch_size=self.batch_size, unique_texts=self.unique_texts, seed=self.seed,
            rank=self._rank(), world_size=self._world_size(), batches_done=self._batches_done,
            group_by_length=self.group_by_length)
        use_single_threaded_tokenizers_in_workers(self.num_workers)
        # Its own generator: creating an iterator then draws nothing from the global one that dropout draws from,
        # so a resumed run draws the dropout masks the uninterrupted one draws.
        return DataLoader(EpochKeyedRows(self.train_rows), batch_sampler=EpochTaggedBatches(sampler),
                          num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed),
                          collate_fn=self.collator(), persistent_workers=self.num_workers > 0)

    def collator(self) -> Callable:
        return self.model().make_collator(self.text_columns, self.target_column, self.prompts)

    def model(self):
        """The LightningModule being trained: it knows how its inputs are tokenised."""
        return self.trainer.lightning_module

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
        inputs = self.eval_inputs.get(split)
        if not inputs:
            return []
        # Each process embeds its own share; similar lengths share a batch, so little goes to padding.
        share = [{"index": index, "input": inputs[index]}
                 for index in range(self._rank(), len(inputs), self._world_size())]
        share.sort(key=lambda row: len(str(row["input"])))
        return DataLoader(share, batch_size=self.eval_batch_size, collate_fn=self.model().make_eval_collator())

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def _world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1


class EpochTaggedBatches(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, row index) keys, so a collator can seed each row's randomness by epoch, also in workers."""

    def __init__(self, sampler: ShardedBatchSampler):
        super().__init__()
        # Lightning calls set_epoch on `batch_sampler.sampler`, which is how the epoch reaches the shuffling.
        self.sampler = sampler

    def __iter__(self):
        epoch = self.sampler.epoch
        for batch in self.sampler:
            yield [(epoch, index) for index in batch]

    def __len__(self) -> int:
        return len(self.sampler)


class EpochKeyedRows(Dataset):
    """Rows fetched by (epoch, index); each comes with both, for collators that draw per-row randomness."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        return {**self.rows[index], "epoch": epoch, "index": index}


def use_single_threaded_tokenizers_in_workers(num_workers: int) -> None:
    """With worker processes the workers are the parallelism: a fast tokenizer's own thread pool in each of them
    would only compete for the same cores (and, forked after use, warns and turns itself off anyway)."""
    if num_workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
