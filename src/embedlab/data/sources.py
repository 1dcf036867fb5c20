"""Reading rows from local files (jsonl, csv, tsv) or Hugging Face hub datasets, with a column mapping.

A source is a mapping with an optional `local` part and an optional `hub` part. The local file wins when it
exists; otherwise the hub dataset is loaded. Every row comes out with the project's column names.
"""

import csv
import json
from collections.abc import Mapping
from pathlib import Path

from embedlab.errors import DataError

# Every other column holds text, and an empty text would train on padding alone.
TARGET_COLUMNS = ("score", "label")
LOCAL_DATA_HINT = ("Point at local data: set paths.data_dir=<folder> (or the EMBEDLAB_DATA_DIR environment variable) "
                   "to a folder laid out like ../shared/data, or set the data config's local.path.")


def load_source(source: Mapping, description: str) -> tuple[list[dict], str]:
    """Rows of a source and where they came from (a file path or a hub id)."""
    local = source.get("local")
    if local and Path(local["path"]).exists():
        return read_local(**local), str(local["path"])
    hub = source.get("hub")
    if hub:
        try:
            return read_hub(**hub), f"hub:{hub['id']}"
        except DataError as error:
            where = f"no file at {local['path']}, and " if local else ""
            raise DataError(f"{description}: {where}{error}") from error
    missing = f"no file at {local['path']}" if local else "no local file configured"
    raise DataError(f"{description}: {missing} and no hub dataset configured. {LOCAL_DATA_HINT}")


def read_local(path: str, columns: Mapping[str, str | int], delimiter: str | None = None, quoting: str = "minimal",
               header: bool = True, score_range: tuple[float, float] = (0.0, 1.0)) -> list[dict]:
    """Read a jsonl, csv or tsv file; `columns` maps our names to the file's names (or 0-based indices).

    Scores are rescaled from `score_range` to [0, 1], e.g. STSB's 0-5 or SICK's 1-5.
    """
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        records = _read_jsonl(path)
    else:
        records = _read_delimited(path, delimiter or ("," if path.suffix == ".csv" else "\t"), quoting, header)
    return [_select(record, columns, score_range, f"{path}:{line}") for line, record in records]


def read_hub(id: str, split: str, columns: Mapping[str, str], subset: str | None = None,
             score_range: tuple[float, float] = (0.0, 1.0)) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(id, subset, split=split)
    except Exception as error:  # the hub client raises many types; all mean the same thing to the user here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"could not load '{id}' ({split}) from the Hugging Face hub: {reason[:200]}. "
                        f"{LOCAL_DATA_HINT}") from error
    return [_select(record, columns, score_range, f"hub:{id}/{split} row {i}") for i, record in enumerate(dataset)]


def _read_jsonl(path: Path):
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{line_number}: not valid JSON ({error.msg})") from error


def _read_delimited(path: Path, delimiter: str, quoting: str, header: bool):
    quote_modes = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}
    if quoting not in quote_modes:
        raise DataError(f"quoting must be one of {sorted(quote_modes)}, got {quoting!r}")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quote_modes[quoting])
        names = next(reader, None) if header else None
        for row in reader:
            if not row:
                continue
            yield reader.line_num, (dict(zip(names, row)) if names is not None else dict(enumerate(row)))


def _select(record: Mapping, columns: Mapping[str, str | int], score_range, where: str) -> dict:
    row = {}
    for ours, theirs in columns.items():
        if theirs not in record:
            available = ", ".join(str(key) for key in record)
            raise DataError(f"{where}: missing column '{theirs}' (for '{ours}'); the row has: {available}")
        row[ours] = record[theirs]
    for column, value in row.items():
        if column not in TARGET_COLUMNS and (not isinstance(value, str) or not value.strip()):
            raise DataError(f"{where}: empty or non-text value {value!r} in column '{column}'")
    if "score" in row:
        low, high = score_range
        row["score"] = (_to_score(row["score"], where) - low) / (high - low)
    return row


def _to_score(value, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: score {value!r} is not a number") from None

