"""Data modules over one table: STSB-style scored pairs, or any columns the user maps."""

import random

from embedlab.data.base import EmbeddingDataModule
from embedlab.data.sources import load_source
from embedlab.errors import ConfigError, DataError


class PairsDataModule(EmbeddingDataModule):
    """Any table: `source.local.columns` / `source.hub.columns` map the loss's column names to the table's.

    Targets named `label` may be class names, given ids through `label_names`. `max_rows` keeps a random subset
    of that size (drawn with `seed`), e.g. a low-resource gold set.
    """

    def __init__(self, source: dict, label_names: dict | None = None, max_rows: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.source = source
        self.label_names = dict(label_names or {})
        self.max_rows = max_rows
        mapped = [tuple(part["columns"]) for part in (source.get("local"), source.get("hub")) if part]
        if not mapped:
            raise ConfigError(f"data '{self.name}': the source needs a local or a hub part")
        if any(columns != mapped[0] for columns in mapped):
            raise ConfigError(f"data '{self.name}': local and hub column mappings must name the same columns")
        self.formats = {"columns": mapped[0]}

    def load_train(self, format: str) -> tuple[list[dict], str]:
        rows, origin = self.load_all(format)
        return self._subset(rows, origin)

    def load_all(self, format: str) -> tuple[list[dict], str]:
        """Every row of the source, before `max_rows` takes its subset."""
        rows, origin = load_source(self.source, f"data '{self.name}'", self.on_bad_row)
        if "label" in self.formats[format]:
            for index, row in enumerate(rows):
                row["label"] = self._label(row["label"], origin, index)
        return rows, origin

    def _subset(self, rows: list[dict], origin: str) -> tuple[list[dict], str]:
        if self.max_rows is not None and self.max_rows < len(rows):
            rows = random.Random(self.seed).sample(rows, self.max_rows)
            origin = f"{self.max_rows} rows sampled from {origin}"
        return rows, origin

    def _label(self, value, origin: str, index: int) -> int:
        if value in self.label_names:
            return int(self.label_names[value])
        try:
            return int(value)
        except (TypeError, ValueError):
            raise DataError(f"{origin}: row {index + 1} label {value!r} is neither an integer nor in "
                            f"data.label_names") from None
