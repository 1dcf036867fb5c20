"""The files of a run directory, named once: what training, evaluation, the recipes and the report read and write;
and what makes a folder belong to one run: a lock held while it runs, and the outputs that show a run was there.
"""

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from embedlab.errors import ConfigError

MODEL_DIR = "model"
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = Path(CHECKPOINT_DIR) / "last.ckpt"
TRAINING_LOG = Path("csv") / "metrics.csv"
# A recipe's cache of the evaluators' metrics of one stage's model.
EVALUATION_FILE = "evaluation.json"
# The retrieval evaluators' figures of each query (evaluator -> metric -> query id -> value), for paired tests.
PER_QUERY_FILE = "per_query.json"
# Hydra's record of the command line; embedlab writes it once the folder is claimed (conf/hydra/default.yaml).
HYDRA_DIR = ".hydra"
OVERRIDES_FILE = Path(HYDRA_DIR) / "overrides.yaml"
LOCK_FILE = ".lock"
# What a run leaves once it has trained or evaluated something, in its folder or in a recipe's stage folders one
# level down. A run stopped by a start-up error leaves only config.yaml, .hydra/ and its log, so it can be retried.
RUN_OUTPUTS = (RESULTS_FILE, EVALUATION_FILE, PER_QUERY_FILE, MODEL_DIR, f"{CHECKPOINT_DIR}/*.ckpt", str(TRAINING_LOG))
# Removed with the outputs when a run starts afresh: logs that would otherwise mix two runs' curves.
RUN_LOGS = (CHECKPOINT_DIR, "csv", "tensorboard")


def write_json(path: str | os.PathLike, value) -> Path:
    """Write `value` as indented JSON through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(staging, path)
    return path


def read_results(run_dir: str | os.PathLike) -> dict | None:
    """A run's results.json, or None when the run has not finished (results.json is the last file a run writes)."""
    path = Path(run_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_per_query(folder: str | os.PathLike) -> dict:
    """The per-query figures kept in a folder's per_query.json (evaluator -> metric -> query id -> value), or none."""
    path = Path(folder) / PER_QUERY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def run_outputs(run_dir: str | os.PathLike) -> list[Path]:
    """The outputs of an earlier run in `run_dir` (or in its stage folders), results.json first."""
    run_dir = Path(run_dir)
    stages = sorted(path for path in run_dir.iterdir() if path.is_dir() and not path.name.startswith(".")) \
        if run_dir.is_dir() else []
    folders = [run_dir, *stages]
    return [found for pattern in RUN_OUTPUTS for folder in folders for found in sorted(folder.glob(pattern))]


def remove_outputs(run_dir: str | os.PathLike) -> None:
    """Clear a folder for a fresh run: the results first, so that no reader pairs them with the new run's files."""
    run_dir = Path(run_dir)
    outputs = run_outputs(run_dir)
    logs = [folder / name for folder in {path.parent for path in outputs} | {run_dir} for name in RUN_LOGS]
    for path in [*outputs, *logs]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@contextlib.contextmanager
def exclusive_use(run_dir: str | os.PathLike):
    """Inside, this process alone writes into `run_dir`: another process holding it raises a ConfigError naming it.

    The lock is an flock on `<run_dir>/.lock`, which the system releases when its holder exits, however it exits.
    """
    path = Path(run_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"run folder {run_dir} is in use by another run ({holder}); wait for it to finish, or "
                          "give this run another hydra.run.dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    try:
        yield
    finally:
        handle.close()
