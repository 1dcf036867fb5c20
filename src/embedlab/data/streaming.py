"""Train rows read as a stream (Hugging Face `datasets` streaming), for tables too large to hold in memory.

A local jsonl, csv or tsv file streams line by line through the `text` builder, so a malformed row is still named
by file and line; a hub dataset streams its shards. Each process keeps its own share of the stream
(`datasets.distributed.split_dataset_by_node`: whole shards when they divide evenly among the processes, else
every world_size-th row), so no two processes train on the same row. Rows pass the same checks as loaded ones,
under the same `on_bad_row` policy, and a seeded shuffle buffer mixes them.
"""

import csv
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from torch.utils.data import IterableDataset

from embedlab.data.sources import (
    LOCAL_DATA_HINT,
    QUOTE_MODES,
    BadRow,
    check_policy,
    check_quoting,
    json_object,
    row_from_record,
    source_part,
)
from embedlab.errors import DataError, first_line

log = logging.getLogger(__name__)
# Rows that clash with a batch wait for a later one; past this many batches' worth waiting, a short batch goes out
# rather than the wait growing with the stream (a table whose rows mostly share one text).
MAX_WAITING_BATCHES = 8


def stream_rows(source: Mapping, description: str, on_bad_row: str = "error", rank: int = 0, world_size: int = 1,
                seed: int = 0, shuffle_buffer: int = 1000,
                convert: Callable[[dict, str], dict] | None = None) -> "RowStream":
    """This process's share of a source's rows, as an iterable that can be read again (each epoch).

    As with `load_source`, the local file wins when it exists, else the hub dataset streams. `convert` maps each
    checked row (and where it came from) to the row trained on, raising BadRow when it cannot.
    """
    check_policy(on_bad_row)
    kind, part = source_part(source, description)
    if kind == "local":
        examples, to_record, origin = _local_examples(**part)
    else:
        examples, to_record, origin = _hub_examples(part["id"], part["split"], part.get("subset"), description)
    columns, score_range = part["columns"], tuple(part.get("score_range", (0.0, 1.0)))
    policy = part.get("on_bad_row", on_bad_row)
    from datasets.distributed import split_dataset_by_node

    # Every process shuffles with the same seed before taking its share, so the shares stay disjoint.
    examples = examples.shuffle(seed=seed, buffer_size=shuffle_buffer)
    share = split_dataset_by_node(examples, rank=rank, world_size=world_size)

    def training_row(record: Mapping, where: str) -> dict:
        row = row_from_record(record, columns, score_range, where)
        return convert(row, where) if convert is not None else row

    return RowStream(share, to_record, training_row, policy, origin)


class RowStream:
    """Good rows of a stream; bad ones stop it or are dropped, with one warning per pass giving their number."""

    def __init__(self, examples: Iterable[dict], to_record: Callable[[dict], tuple[str, object] | None],
                 select: Callable[[object, str], dict], on_bad_row: str, origin: str):
        self.examples = examples
        self.to_record = to_record
        self.select = select
        self.on_bad_row = on_bad_row
        self.origin = origin

    def __iter__(self) -> Iterator[dict]:
        kept, skipped, first_problem = 0, 0, None
        for example in self.examples:
            try:
                record = self.to_record(example)
                if record is None:
                    continue
                row = self.select(record[1], record[0])
            except BadRow as problem:
                if self.on_bad_row == "error":
                    raise
                skipped += 1
                first_problem = first_problem or str(problem)
                continue
            kept += 1
            yield row
        if skipped:
            log.warning("%s: skipped %d malformed rows of %d streamed (on_bad_row=skip); the first: %s", self.origin,
                        skipped, skipped + kept, first_problem)


class StreamedBatches(IterableDataset):
    """Batches of rows from a RowStream, for a DataLoader with `batch_size=None` and the collator as `collate_fn`.

    With `unique_texts` no text appears twice in a batch: a row that clashes waits for a later batch. With
    `drop_last` (under DDP) a short final batch is dropped, as the in-memory sampler does. Each process batches
    its own share, so unlike the in-memory sampler uniqueness holds within a process's batch, not across the
    processes whose negatives MNR gathers.
    """

    def __init__(self, rows: Iterable[dict], text_columns: list[str], batch_size: int, unique_texts: bool,
                 drop_last: bool = False):
        super().__init__()
        self.rows = rows
        self.text_columns = list(text_columns)
        self.batch_size = batch_size
        self.unique_texts = unique_texts
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[dict]]:
        waiting: list[dict] = []
        for row in self.rows:
            waiting.append(row)
            if len(waiting) >= self.batch_size:
                batch, waiting = self._take_batch(waiting)
                if len(batch) == self.batch_size or len(waiting) >= MAX_WAITING_BATCHES * self.batch_size:
                    yield batch
                else:
                    waiting = batch + waiting
        while waiting:
            batch, waiting = self._take_batch(waiting)
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def _take_batch(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """Up to batch_size rows, earliest first, skipping those whose texts the batch already holds."""
        if not self.unique_texts:
            return rows[:self.batch_size], rows[self.batch_size:]
        batch, rest, seen = [], [], set()
        for row in rows:
            texts = {row[column] for column in self.text_columns}
            if len(batch) < self.batch_size and seen.isdisjoint(texts):
                batch.append(row)
                seen.update(texts)
            else:
                rest.append(row)
        return batch, rest


def _local_examples(path: str, delimiter: str | None = None, quoting: str = "minimal", header: bool = True, **_):
    """A local file as a stream of lines numbered from 1, and how a line becomes (where, record)."""
    import datasets

    path = Path(path)
    # Arrow holds no lone surrogates, so undecodable bytes become U+FFFD here and the line is reported as bad (a
    # U+FFFD written into the file itself is taken for the same damage).
    lines = datasets.load_dataset("text", data_files=str(path), split="train", streaming=True,
                                  encoding_errors="replace")
    # Numbered before the stream is shuffled and shared out, so a bad row is named by its line in the file.
    lines = lines.map(lambda example, index: {"line": index + 1}, with_indices=True)
    def checked_line(example: dict) -> tuple[str, str] | None:
        """The line and where it is, None for a blank one."""
        if not example["text"].strip():
            return None
        where = f"{path}:{example['line']}"
        if "\ufffd" in example["text"]:
            raise BadRow(f"{where}: invalid UTF-8")
        return where, example["text"]

    if path.suffix in (".jsonl", ".json"):
        def to_record(example: dict) -> tuple[str, object] | None:
            line = checked_line(example)
            return None if line is None else (line[0], json_object(line[1], line[0]))

        return lines, to_record, str(path)
    check_quoting(quoting)
    dialect = {"delimiter": delimiter or ("," if path.suffix == ".csv" else "\t"), "quoting": QUOTE_MODES[quoting]}
    names = _header(path, dialect) if header else None

    def to_record(example: dict) -> tuple[str, object] | None:
        line = None if names is not None and example["line"] == 1 else checked_line(example)
        if line is None:
            return None
        fields = next(csv.reader([line[1]], **dialect))
        return line[0], dict(zip(names, fields)) if names is not None else dict(enumerate(fields))

    return lines, to_record, str(path)


def _header(path: Path, dialect: dict) -> list[str]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return next(csv.reader(handle, **dialect), [])


def _hub_examples(id: str, split: str, subset: str | None, description: str):
    import datasets

    try:
        examples = datasets.load_dataset(id, subset, split=split, streaming=True)
    except Exception as error:  # the hub client raises many types; all mean the same thing to the user here
        raise DataError(f"{description}: could not stream '{id}' ({split}) from the Hugging Face hub: "
                        f"{first_line(error)}. {LOCAL_DATA_HINT}") from error
    examples = examples.map(lambda example, index: {"_row_index": index}, with_indices=True)

    def to_record(example: dict) -> tuple[str, object]:
        record = dict(example)
        return f"hub:{id}/{split} row {record.pop('_row_index')}", record

    return examples, to_record, f"hub:{id}/{split}"
