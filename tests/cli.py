"""Running `python train.py` (or another entry point) as a user would, offline, and reading its errors."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_train(*overrides: str, run_dir: Path, data_dir: Path, backbone: str, timeout: int = 300,
              env: dict[str, str] | None = None):
    """`env` adds to (or replaces) the offline environment, e.g. a local fake of the hub."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    command = [sys.executable, "train.py", f"backbone.name_or_path={backbone}", f"paths.data_dir={data_dir}",
               f"hydra.run.dir={run_dir}", "eval_every_n_steps=2", "data.batch_size=8", *overrides]
    return subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, expected: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("embedlab: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
