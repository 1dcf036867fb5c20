"""Running `python train.py` (or another entry point) as a user would, offline, and reading its errors.

`run_train` starts a process. `train_here` runs the same command line through the same entry point in the test's
own process: for a run stopped by an error before it trains, which would otherwise spend most of its time
importing torch and Lightning again.
"""

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}


def train_arguments(*overrides: str, run_dir: Path, data_dir: Path, backbone: str) -> list[str]:
    return [f"backbone.name_or_path={backbone}", f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
            "eval_every_n_steps=2", "data.batch_size=8", *overrides]


def run_train(*overrides: str, run_dir: Path, data_dir: Path, backbone: str, timeout: int = 300, env=None):
    command = [sys.executable, "train.py", *train_arguments(*overrides, run_dir=run_dir, data_dir=data_dir,
                                                            backbone=backbone)]
    return run_command(command, timeout=timeout, env=env)


def run_command(command: list[str], timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """`command` run from the repository's root, offline; `env` adds to (a None value removes from) os.environ."""
    environment = {**os.environ, **OFFLINE, **(env or {})}
    environment = {key: value for key, value in environment.items() if value is not None}
    return subprocess.run(command, check=False, cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def train_here(capfd, monkeypatch, *overrides: str, run_dir: Path, data_dir: Path, backbone: str) -> Finished:
    from embedlab.train import main

    arguments = train_arguments(*overrides, run_dir=run_dir, data_dir=data_dir, backbone=backbone)
    return run_here(main, ["train.py", *arguments], capfd, monkeypatch)


def run_here(main, argv: list[str], capfd, monkeypatch) -> Finished:
    """An entry point's `main()` run with `argv` in this process: its exit status and what it printed."""
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.chdir(ROOT)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capfd.readouterr()
    try:
        main()
        returncode = 0
    except SystemExit as exit:
        returncode = exit.code if isinstance(exit.code, int) else 1
    finally:
        # Hydra configured logging for the job and holds its config: the next test starts from neither.
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    out, err = capfd.readouterr()
    return Finished(returncode, out, err)


def assert_one_line_error(result, expected: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("embedlab: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
