"""Several training sources in one run, each with its own columns, loss and prompts; every batch comes from one.

`schedule="proportional"` draws the sources in proportion to their number of batches, so that an epoch trains on
every batch of every source once, in a seeded order; `"round_robin"` takes one batch of each source in turn and
ends the epoch when the smallest source runs out, as sentence-transformers' round-robin sampler does. Each source
keeps its own sampler, so DDP sharding and no-duplicate batches hold per source, and the order of the mixture is
planned alike by every process. A run resumed mid-epoch skips the mixture's batches already trained on.
"""

import random
from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset, Sampler

from embedlab.data.base import (
    EmbeddingDataModule,
    use_single_threaded_tokenizers_in_workers,
)
from embedlab.data.sampler import ShardedBatchSampler
from embedlab.errors import ConfigError
from embedlab.losses.signature import configured_loss_class

SCHEDULES = ("proportional", "round_robin")


class MixtureDataModule(EmbeddingDataModule):
    """`sources` are data configs by name (each instantiated here, as `data=<option>` would be); `losses` holds a
    loss config for each source name (the objective builds the losses from it, this module only checks columns).
    `batch_size`, when set, is every source's; null keeps each source's own."""

    formats: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, sources: Mapping[str, Mapping], losses: Mapping[str, Mapping],
                 schedule: str = "proportional", batch_size: int | None = None, **kwargs):
        super().__init__(**kwargs, **({"batch_size": batch_size} if batch_size is not None else {}))
        if schedule not in SCHEDULES:
            raise ConfigError(f"data.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if not sources or set(sources) != set(losses):
            raise ConfigError(f"data '{self.name}': every source needs a loss and every loss a source; sources "
                              f"{sorted(sources)}, losses {sorted(losses)}")
        shared = {"batch_size": batch_size} if batch_size is not None else {}
        self.sources: dict[str, EmbeddingDataModule] = {name: instantiate(source, **shared, _convert_="all")
                                                         for name, source in sources.items()}
        self.loss_configs = dict(losses)
        self.schedule = schedule

    def fit_loss(self, loss_name: str, loss_class) -> list[str]:
        """Each source's format is chosen for its own loss; returns the first source's text columns."""
        for name, source in self.sources.items():
            source.fit_loss(f"{name}: {_option(self.loss_configs[name])}", configured_loss_class(self.loss_configs[name]))
        self.format = "mixture"
        first = next(iter(self.sources.values()))
        self.text_columns, self.target_column, self.unique_texts = first.text_columns, first.target_column, False
        return self.text_columns

    def setup(self, stage: str) -> None:
        for source in self.sources.values():
            source.setup(stage)
        if stage == "fit":
            self.train_rows = [row for source in self.sources.values() for row in source.train_rows]

    def stats(self) -> dict[str, float]:
        return {f"data/{name}/rows": float(len(source.train_rows or [])) for name, source in self.sources.items()}

    def train_dataloader(self) -> DataLoader:
        names = list(self.sources)
        samplers = [ShardedBatchSampler(
            [tuple(row[column] for column in source.text_columns) for row in source.train_rows],
            batch_size=source.batch_size, unique_texts=source.unique_texts, seed=source.seed, rank=self._rank(),
            world_size=self._world_size(), group_by_length=source.group_by_length) for source in self.sources.values()]
        batches = MixedBatches(samplers, self.schedule, self.seed, self._batches_done)
        collators = {name: self.model().make_collator(source.text_columns, source.target_column, source.prompts)
                     for name, source in self.sources.items()}
        use_single_threaded_tokenizers_in_workers(self.num_workers)
        # Its own generator, as the single-source loader has: see EmbeddingDataModule.train_dataloader.
        return DataLoader(MixedRows(names, [source.train_rows for source in self.sources.values()]),
                          batch_sampler=batches, num_workers=self.num_workers, collate_fn=SourceCollator(collators),
                          generator=torch.Generator().manual_seed(self.seed), persistent_workers=self.num_workers > 0)


class MixedBatches(Sampler[list[tuple[int, int, int]]]):
    """Batches of (source, epoch, row) keys: each batch one source's, in the mixture's seeded order."""

    def __init__(self, samplers: list[ShardedBatchSampler], schedule: str, seed: int,
                 batches_done: Callable[[int], int]):
        super().__init__()
        self.samplers = samplers
        self.schedule = schedule
        self.seed = seed
        self.epoch = 0
        self.batches_done = batches_done

    @property
    def sampler(self) -> "MixedBatches":
        # Lightning calls set_epoch on `dataloader.batch_sampler.sampler`.
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._order())

    def __iter__(self):
        per_source = [iter(list(sampler)) for sampler in self.samplers]
        order = self._order()
        skip = self.batches_done(self.epoch)
        for position, source in enumerate(order):
            batch = next(per_source[source])
            if position >= skip:
                yield [(source, self.epoch, index) for index in batch]

    def _order(self) -> list[int]:
        """Which source each batch of this epoch comes from."""
        counts = [len(sampler) for sampler in self.samplers]
        if self.schedule == "round_robin":
            return [source for _ in range(min(counts)) for source in range(len(counts))]
        order = [source for source, count in enumerate(counts) for _ in range(count)]
        random.Random(f"{self.seed}/{self.epoch}/mixture").shuffle(order)
        return order


class MixedRows(Dataset):
    def __init__(self, names: list[str], rows: list[list[dict]]):
        self.names = names
        self.rows = rows

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        source, epoch, index = key
        return {**self.rows[source][index], "source": self.names[source], "epoch": epoch, "index": index}


class SourceCollator:
    """Collates a batch with its source's collator and says which source it came from."""

    def __init__(self, collators: Mapping[str, Callable]):
        self.collators = dict(collators)

    def __call__(self, rows: list[dict]) -> dict:
        source = rows[0]["source"]
        return {**self.collators[source](rows), "source": source}


def _option(loss_cfg: Mapping) -> str:
    return str(loss_cfg["_target_"]).rsplit(".", 1)[-1]
