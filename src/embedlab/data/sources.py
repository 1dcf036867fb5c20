"""Reading rows from local files (jsonl, csv, tsv) or Hugging Face hub datasets, with a column mapping.

A source is a mapping with an optional `local` part and an optional `hub` part. The local file wins when it
exists; otherwise the hub dataset is loaded. Every row comes out with the project's column names.

A malformed row (a missing field, a non-numeric or out-of-range score, an empty text, invalid UTF-8, a jsonl line
that is not a JSON object) is never trained on: `on_bad_row="error"` stops at the first one, naming the file and
line (or the hub row); `on_bad_row="skip"` drops each one and logs how many went.

A source may also hold out a seeded fraction of its groups (`holdout`): training reads the other side, and an
evaluation of the held-out side (a dev split carved from the training data) reads the same split.
"""

import csv
import hashlib
import json
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from embedlab.errors import ConfigError, DataError, first_line

log = logging.getLogger(__name__)
# Every other column holds text, and an empty text would train on padding alone. `scores` holds a list of numbers:
# a teacher's score of each candidate of the row.
TARGET_COLUMNS = ("score", "scores", "label")
BAD_ROW_POLICIES = ("error", "skip")
HOLDOUT_SIDES = ("all", "train", "holdout")
# Where a row keeps its holdout group while the source is split; no loss or evaluator reads it.
GROUP_COLUMN = "_holdout_group"
QUOTE_MODES = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}
LOCAL_DATA_HINT = ("Point at local data: set paths.data_dir=<folder> (or the EMBEDLAB_DATA_DIR environment variable) "
                   "to a folder laid out like ../shared/data, or set the data config's local.path.")


class BadRow(DataError):
    """One row cannot be trained on; the message starts with where the row is."""


def source_part(source: Mapping, description: str) -> tuple[str, Mapping]:
    """The part of a source to read: ("local", its mapping) when the local file exists, else ("hub", ...)."""
    local = source.get("local")
    if local and Path(local["path"]).exists():
        return "local", local
    if source.get("hub"):
        return "hub", source["hub"]
    missing = f"no file at {local['path']}" if local else "no local file configured"
    raise DataError(f"{description}: {missing} and no hub dataset configured. {LOCAL_DATA_HINT}")


def load_source(source: Mapping, description: str, on_bad_row: str = "error",
                side: str = "all") -> tuple[list[dict], str]:
    """Rows of a source and where they came from (a file path or a hub id).

    `on_bad_row` applies unless the source's local or hub part sets its own. A source with a `holdout` (see
    `Holdout`) is split by group: `side="train"` gives the rows outside the held-out groups, `"holdout"` those inside;
    `"all"` every row.
    """
    holdout = Holdout(**source["holdout"]) if source.get("holdout") else None
    if side not in HOLDOUT_SIDES or (side != "all" and holdout is None):
        raise ConfigError(f"{description}: side must be one of {', '.join(HOLDOUT_SIDES)}, and 'train' or "
                          f"'holdout' needs the source to define a holdout; got side={side!r}")
    kind, part = source_part(source, description)
    if holdout is not None:
        part = {**part, "columns": {**part["columns"], GROUP_COLUMN: holdout.field}}
    try:
        rows = (read_local(**{"on_bad_row": on_bad_row, **part}) if kind == "local"
                else read_hub(**{"on_bad_row": on_bad_row, **part}))
    except BadRow:
        raise
    except DataError as error:
        if kind == "local":
            raise
        local = source.get("local")
        where = f"no file at {local['path']}, and " if local else ""
        raise DataError(f"{description}: {where}{error}") from error
    origin = str(part["path"]) if kind == "local" else f"hub:{part['id']}"
    if holdout is None:
        return rows, origin
    kept = [row for row in rows if side == "all" or holdout.holds(row[GROUP_COLUMN]) == (side == "holdout")]
    for row in kept:
        del row[GROUP_COLUMN]
    return kept, f"{origin} ({side} side of the holdout by {holdout.field})"


def sample_texts(source: Mapping, description: str, count: int, seed: int) -> list[str]:
    """A seeded sample of `count` distinct texts from the text columns (all but the targets) of a source's rows."""
    rows, _ = load_source(source, description)
    texts = list(dict.fromkeys(value for row in rows for column, value in row.items() if column not in TARGET_COLUMNS))
    return random.Random(seed).sample(texts, min(count, len(texts)))


@dataclass(frozen=True)
class Holdout:
    """Groups (values of the record field `field`, e.g. a document's focus) held out of training, a seeded
    `fraction` of them: every row of a group is on the same side, so no group is both trained on and evaluated.
    A group's side depends on its name, the fraction and the seed alone, not on the order or number of rows."""

    field: str
    fraction: float
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise ConfigError(f"holdout.fraction must be between 0 and 1, got {self.fraction}")

    def holds(self, group: str) -> bool:
        digest = hashlib.sha256(f"{self.seed}/{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") < self.fraction * 2**64


def label_id(value, label_names: Mapping) -> int | None:
    """A class id from a label given as a name in `label_names` (name -> id) or as an id; None when it is neither."""
    if isinstance(value, str) and value in label_names:
        return int(label_names[value])
    if isinstance(value, str) and value.strip().lower() in label_names:
        return int(label_names[value.strip().lower()])
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_local(path: str, columns: Mapping[str, str | int], delimiter: str | None = None, quoting: str = "minimal",
               header: bool = True, score_range: tuple[float, float] = (0.0, 1.0),
               on_bad_row: str = "error", multiline: bool = False) -> list[dict]:
    """Read a jsonl, csv or tsv file; `columns` maps our names to the file's names (or 0-based indices).

    Scores are rescaled from `score_range` to [0, 1], e.g. STSB's 0-5 or SICK's 1-5. A csv or tsv row whose quoted
    field runs over several lines is a bad row unless `multiline`: far more often than a text with line breaks,
    it is an unclosed quote that swallowed the rows after it.
    """
    check_policy(on_bad_row)
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        records = ((f"{path}:{line}", text) for line, text in _jsonl_lines(path))
        parse = json_object
    else:
        table = _read_delimited(path, delimiter or ("," if path.suffix == ".csv" else "\t"), quoting, header, multiline)
        records = ((f"{path}:{line}", record) for line, record in table)
        parse = _read_row
    return _good_rows(records, lambda record, where: row_from_record(parse(record, where), columns, score_range, where),
                      on_bad_row, str(path))


def read_hub(id: str, split: str, columns: Mapping[str, str], subset: str | None = None,
             score_range: tuple[float, float] = (0.0, 1.0), on_bad_row: str = "error") -> list[dict]:
    check_policy(on_bad_row)
    import datasets

    try:
        dataset = datasets.load_dataset(id, subset, split=split)
    except Exception as error:  # the hub client raises many types; all mean the same thing to the user here
        raise DataError(f"could not load '{id}' ({split}) from the Hugging Face hub: {first_line(error)}. "
                        f"{LOCAL_DATA_HINT}") from error
    records = ((f"hub:{id}/{split} row {index}", record) for index, record in enumerate(dataset))
    return _good_rows(records, lambda record, where: row_from_record(record, columns, score_range, where), on_bad_row,
                      f"hub:{id}/{split}")


def check_quoting(quoting: str) -> None:
    if quoting not in QUOTE_MODES:
        raise DataError(f"quoting must be one of {sorted(QUOTE_MODES)}, got {quoting!r}")


def check_policy(on_bad_row: str) -> None:
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ConfigError(f"on_bad_row must be one of {', '.join(BAD_ROW_POLICIES)}, got {on_bad_row!r}")


def _good_rows(records: Iterable[tuple[str, object]], select: Callable[[object, str], dict], on_bad_row: str,
               origin: str) -> list[dict]:
    rows, skipped, first_problem = [], 0, None
    for where, record in records:
        try:
            rows.append(select(record, where))
        except BadRow as problem:
            if on_bad_row == "error":
                raise
            skipped += 1
            first_problem = first_problem or str(problem)
    if skipped:
        log.warning("%s: skipped %d malformed rows of %d (on_bad_row=skip); the first: %s", origin, skipped,
                    skipped + len(rows), first_problem)
    return rows


def _jsonl_lines(path: Path):
    # Undecodable bytes become lone surrogates, so one bad line is reported (or skipped) rather than the whole file.
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                yield line_number, line


def json_object(text: str, where: str) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRow(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise BadRow(f"{where}: not a JSON object")
    return record


class Unreadable(str):
    """A csv or tsv row the reader could not take apart, and why."""


def _read_row(record: dict | Unreadable, where: str) -> dict:
    if isinstance(record, Unreadable):
        raise BadRow(f"{where}: {record}")
    return record


def _read_delimited(path: Path, delimiter: str, quoting: str, header: bool, multiline: bool = False):
    """(line, record) per row, numbered by the row's first line; a row that cannot be read comes as Unreadable."""
    check_quoting(quoting)
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=QUOTE_MODES[quoting])
        names = next(reader, None) if header else None
        while True:
            first_line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # a field over csv's size limit; the reader goes on at the next line
                yield first_line, Unreadable(f"{error} characters")
                continue
            if reader.line_num > first_line and not multiline:
                yield first_line, Unreadable(
                    f"a quoted field runs on to line {reader.line_num}: an unclosed quote? (a file whose texts hold "
                    "line breaks needs local.multiline=true)")
            elif row:
                yield first_line, (dict(zip(names, row)) if names is not None else dict(enumerate(row)))


def row_from_record(record: Mapping, columns: Mapping[str, str | int], score_range, where: str) -> dict:
    row = {}
    for ours, theirs in columns.items():
        if theirs not in record:
            # Shown escaped: the names of a binary file's "header" are no text a log file could hold.
            available = ", ".join(str(key).encode("utf-8", "backslashreplace").decode() for key in record)
            raise BadRow(f"{where}: missing column '{theirs}' (for '{ours}'); the row has: {available}")
        row[ours] = record[theirs]
    for column, value in row.items():
        # Targets are numbers or labels, and a group (of a holdout, of negatives: columns named with a leading
        # underscore) is only compared (an empty group is a group too).
        if column in TARGET_COLUMNS or column.startswith("_"):
            continue
        if not isinstance(value, str) or not value.strip():
            raise BadRow(f"{where}: empty or non-text value {value!r} in column '{column}'")
        if _has_undecodable_bytes(value):
            raise BadRow(f"{where}: invalid UTF-8 in column '{column}'")
    if "score" in row:
        row["score"] = _to_score(row["score"], score_range, where)
    if "scores" in row:
        row["scores"] = _to_numbers(row["scores"], where)
    return row


def _to_numbers(value, where: str) -> list[float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadRow(f"{where}: scores {value!r} is not a list of numbers") from None
    if not isinstance(value, list) or not value or not all(
            isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number)
            for number in value):
        raise BadRow(f"{where}: scores {value!r} is not a list of numbers")
    return [float(number) for number in value]


def _has_undecodable_bytes(text: str) -> bool:
    return any("\udc80" <= character <= "\udcff" for character in text)


def _to_score(value, score_range, where: str) -> float:
    """The score rescaled from `score_range` to [0, 1]."""
    low, high = score_range
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise BadRow(f"{where}: score {value!r} is not a number") from None
    if math.isnan(score) or not low <= score <= high:
        raise BadRow(f"{where}: score {value!r} is outside [{low:g}, {high:g}]")
    return (score - low) / (high - low)
