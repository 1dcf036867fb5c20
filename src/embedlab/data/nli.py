"""NLI pairs as contrastive data: entailment is the positive, contradiction the hard negative."""

import logging
from pathlib import Path
from typing import ClassVar

from embedlab.data.base import EmbeddingDataModule
from embedlab.data.sources import label_id, read_hub, read_local
from embedlab.errors import DataError

log = logging.getLogger(__name__)
LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def nli_label(value) -> int | None:
    """The class id of an NLI label given as a name or an id; None for unlabelled rows such as SNLI's '-'."""
    label = label_id(value, LABELS)
    return label if label in LABELS.values() else None


def nli_triplets(rows: list[dict]) -> list[dict]:
    """One (anchor, positive, negative) per premise that has both an entailed and a contradicting hypothesis."""
    by_premise: dict[str, dict[int, str]] = {}
    for row in rows:
        label = nli_label(row["label"])
        if label is not None:
            by_premise.setdefault(row["premise"], {}).setdefault(label, row["hypothesis"])
    return [{"anchor": premise, "positive": found[LABELS["entailment"]], "negative": found[LABELS["contradiction"]]}
            for premise, found in by_premise.items()
            if LABELS["entailment"] in found and LABELS["contradiction"] in found]


def nli_pairs(rows: list[dict]) -> list[dict]:
    pairs = [{"sentence1": row["premise"], "sentence2": row["hypothesis"], "label": nli_label(row["label"])}
             for row in rows]
    return [pair for pair in pairs if pair["label"] is not None]


class NLIDataModule(EmbeddingDataModule):
    """Labelled NLI files as triplets (for MNR, triplet) or as labelled pairs (for softmax).

    Triplets are built per file, so the same premise in two files (two annotation protocols) gives two triplets.
    With `hard_negatives=false` the triplets lose their contradiction: the same (anchor, positive) rows, so that
    MNR with and without hard negatives differ in nothing else.
    """

    formats: ClassVar[dict[str, tuple[str, ...]]] = {
        "triplets": ("anchor", "positive", "negative"), "pairs": ("sentence1", "sentence2", "label")}

    def __init__(self, files: list, columns: dict, hub: dict | None = None, hard_negatives: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not hard_negatives:
            self.formats = {"triplets": ("anchor", "positive"), "pairs": self.formats["pairs"]}
        self.files = [dict(file) for file in files]
        self.columns = dict(columns)
        self.hub = dict(hub) if hub else None

    def load_train(self, format: str) -> tuple[list[dict], str]:
        present = [file for file in self.files if Path(file["path"]).exists()]
        if present and len(present) < len(self.files):
            missing = [file["path"] for file in self.files if file not in present]
            raise DataError(f"data '{self.name}': missing NLI files {missing}")
        if present:
            convert = nli_triplets if format == "triplets" else nli_pairs
            rows = []
            for file in present:
                raw = read_local(columns=self.columns, **{"on_bad_row": self.on_bad_row, **file})
                converted = self._without_unused_columns(convert(raw), format)
                log.info("%s: %d labelled pairs -> %d %s", file["path"], len(raw), len(converted), format)
                rows.extend(converted)
            return rows, ", ".join(file["path"] for file in present)
        if self.hub:
            return self._load_hub(format)
        raise DataError(f"data '{self.name}': none of {[f['path'] for f in self.files]} exists and no hub dataset "
                        "is configured. Set paths.data_dir to a folder laid out like ../shared/data.")

    def _without_unused_columns(self, rows: list[dict], format: str) -> list[dict]:
        columns = self.formats[format]
        return [{column: row[column] for column in columns} for row in rows]

    def _load_hub(self, format: str) -> tuple[list[dict], str]:
        hub = self.hub
        if format == "triplets":
            columns = {"anchor": "anchor", "positive": "positive", "negative": "negative"}
            rows = read_hub(hub["id"], hub["split"], columns, subset=hub["triplet_subset"], on_bad_row=self.on_bad_row)
        else:
            columns = {"premise": "premise", "hypothesis": "hypothesis", "label": "label"}
            rows = nli_pairs(read_hub(hub["id"], hub["split"], columns, subset=hub["pair_subset"],
                                      on_bad_row=self.on_bad_row))
        return self._without_unused_columns(rows, format), f"hub:{hub['id']}"
