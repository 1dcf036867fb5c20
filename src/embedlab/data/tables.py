"""A data module over one table, with the columns the user maps: STSB-style scored pairs, question-answer pairs,
mined triplets, labelled pairs."""

import random

from torch.utils.data import DataLoader

from embedlab.data.base import (
    EmbeddingDataModule,
    use_single_threaded_tokenizers_in_workers,
)
from embedlab.data.group_negatives import NEGATIVE_GROUP_COLUMN, GroupNegatives
from embedlab.data.sources import BadRow, label_id, load_source
from embedlab.data.streaming import StreamedBatches, stream_rows
from embedlab.errors import ConfigError, DataError


class PairsDataModule(EmbeddingDataModule):
    """Any table: `source.local.columns` / `source.hub.columns` map the loss's column names to the table's.

    Targets named `label` may be class names, given ids through `label_names`. `max_rows` keeps a random subset
    of that size (drawn with `seed`), e.g. a low-resource gold set. A source with a `holdout` trains on the rows
    outside the held-out groups (see embedlab.data.sources.Holdout).

    `group_negatives` gives each row a `negative` column: the positive of another row of its group (the source
    field `group_negatives.field`), see embedlab.data.group_negatives.

    With `streaming` the train table is read as a stream (see embedlab.data.streaming), each process its own
    share, mixed in a shuffle buffer of `shuffle_buffer` rows; a stream has no length, so the trainer needs
    `max_steps`.
    """

    def __init__(self, source: dict, label_names: dict | None = None, max_rows: int | None = None,
                 streaming: bool = False, shuffle_buffer: int = 1000, group_negatives: dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.source = source
        self.label_names = dict(label_names or {})
        self.max_rows = max_rows
        self.streaming = streaming
        self.shuffle_buffer = shuffle_buffer
        if streaming and source.get("holdout"):
            raise ConfigError(f"data '{self.name}': a holdout is split from a loaded table; read it with "
                              "data.streaming=false")
        if streaming and max_rows is not None:
            raise ConfigError(f"data '{self.name}': data.max_rows draws a subset of a loaded table; with "
                              "data.streaming=true leave it null and bound the run with trainer.max_steps")
        mapped = [tuple(part["columns"]) for part in (source.get("local"), source.get("hub")) if part]
        if not mapped:
            raise ConfigError(f"data '{self.name}': the source needs a local or a hub part")
        if any(columns != mapped[0] for columns in mapped):
            raise ConfigError(f"data '{self.name}': local and hub column mappings must name the same columns")
        self.group_negatives = GroupNegatives(**group_negatives) if group_negatives else None
        self.formats = {"columns": mapped[0] + (("negative",) if self.group_negatives else ())}
        if self.group_negatives and (streaming or "negative" in mapped[0] or "positive" not in mapped[0]):
            raise ConfigError(f"data '{self.name}': data.group_negatives adds a negative column to (anchor, positive) "
                              f"rows of a loaded table; this source maps {list(mapped[0])}"
                              f"{' and streams' if streaming else ''}")

    def setup(self, stage: str) -> None:
        if self.streaming and stage == "fit" and self.trainer is not None and self.trainer.max_steps < 0:
            raise ConfigError("data.streaming=true reads a stream of unknown length: set trainer.max_steps=N")
        super().setup(stage)

    def train_dataloader(self) -> DataLoader:
        if not self.streaming:
            return super().train_dataloader()
        world_size = self._world_size()
        rows = stream_rows(self.source, f"data '{self.name}'", self.on_bad_row, rank=self._rank(),
                           world_size=world_size, seed=self.seed, shuffle_buffer=self.shuffle_buffer,
                           convert=self._labelled if "label" in self.formats[self.format] else None)
        batches = StreamedBatches(rows, self.text_columns, self.batch_size, self.unique_texts,
                                  drop_last=world_size > 1)
        use_single_threaded_tokenizers_in_workers(self.num_workers)
        return DataLoader(batches, batch_size=None, num_workers=self.num_workers, collate_fn=self.collator(),
                          persistent_workers=self.num_workers > 0)

    def _labelled(self, row: dict, where: str) -> dict:
        try:
            row["label"] = self._label(row["label"], where)
        except DataError as error:
            raise BadRow(str(error)) from None
        return row

    def load_train(self, format: str) -> tuple[list[dict], str]:
        rows, origin = self.load_all(format)
        return self._subset(rows, origin)

    def load_all(self, format: str) -> tuple[list[dict], str]:
        """Every row of the source, before `max_rows` takes its subset."""
        side = "train" if self.source.get("holdout") else "all"
        source = self._source_with_groups() if self.group_negatives else self.source
        rows, origin = load_source(source, f"data '{self.name}'", self.on_bad_row, side=side)
        if self.group_negatives:
            rows = self.group_negatives.add_to(rows, self.seed)
            origin = f"{origin}, negatives by {self.group_negatives.field}"
        if "label" in self.formats[format]:
            for index, row in enumerate(rows):
                row["label"] = self._label(row["label"], f"{origin}: row {index + 1}")
        return rows, origin

    def _source_with_groups(self) -> dict:
        """The source, each of its parts also reading the field that groups rows for their negatives."""
        group = {NEGATIVE_GROUP_COLUMN: self.group_negatives.field}
        return {**self.source, **{part: {**self.source[part], "columns": {**self.source[part]["columns"], **group}}
                                  for part in ("local", "hub") if self.source.get(part)}}

    def _subset(self, rows: list[dict], origin: str) -> tuple[list[dict], str]:
        if self.max_rows is not None and self.max_rows < len(rows):
            rows = random.Random(self.seed).sample(rows, self.max_rows)
            origin = f"{self.max_rows} rows sampled from {origin}"
        return rows, origin

    def _label(self, value, where: str) -> int:
        label = label_id(value, self.label_names)
        if label is None:
            raise DataError(f"{where} label {value!r} is neither an integer nor in data.label_names")
        return label
