"""The files of a run directory, named once: what training, evaluation, the recipes and the report read and write."""

import json
import os
from pathlib import Path

MODEL_DIR = "model"
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = Path(CHECKPOINT_DIR) / "last.ckpt"
TRAINING_LOG = Path("csv") / "metrics.csv"


def write_json(path: str | os.PathLike, value) -> Path:
    """Write `value` as indented JSON through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(staging, path)
    return path


def read_results(run_dir: str | os.PathLike) -> dict | None:
    """A run's results.json, or None when the run has not finished."""
    path = Path(run_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
