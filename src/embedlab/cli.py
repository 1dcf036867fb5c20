"""The one wrapper of every entry point: a Hydra main whose config is saved redacted into its run directory, and
whose configuration and data errors reach the user as one line, also when Hydra's instantiate wrapped them."""

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from embedlab.config import CONF_DIR
from embedlab.errors import user_error
from embedlab.redaction import save_config
from embedlab.run_folder import CONFIG_FILE


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], object]]:
    """`main = entry_point("train")(task)`: `task(cfg)` runs under Hydra with the config `conf/<config_name>.yaml`."""

    def wrap(task: Callable[[DictConfig], object]) -> Callable[[], object]:
        @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
        def main(cfg: DictConfig):
            with one_line_errors():
                # Only one process writes: DDP's other ranks run this same entry point.
                if rank_zero_only.rank == 0:
                    save_config(cfg, Path(cfg.paths.output_dir) / CONFIG_FILE)
                return task(cfg)

        return main

    return wrap


@contextlib.contextmanager
def one_line_errors():
    """A configuration or data error raised inside prints `embedlab: error: ...` and exits with status 1."""
    try:
        yield
    except Exception as error:
        if not _printed_as_one_line(error):
            raise
        sys.exit(1)


def report_errors(task: Callable[[], int]) -> int:
    """For the entry points that read plain arguments: `task()`'s exit status, or 1 after a one-line error."""
    try:
        return task()
    except Exception as error:
        if not _printed_as_one_line(error):
            raise
        return 1


def _printed_as_one_line(error: BaseException) -> bool:
    cause = user_error(error)
    if cause is not None:
        print(f"embedlab: error: {cause}", file=sys.stderr)
    return cause is not None
