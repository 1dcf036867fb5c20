"""The one wrapper of every entry point: a Hydra main that claims its run directory (one run per folder), saves
its config redacted there, and reports configuration and data errors as one line, also Hydra's own errors and
those that Hydra's instantiate wrapped.
"""

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    OverrideParseException,
    SearchPathException,
)
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
)

from embedlab.assembly import TrainingInterrupted
from embedlab.config import CONF_DIR
from embedlab.errors import ConfigError, first_line, user_error
from embedlab.modeling.model_files import recover_interrupted_save
from embedlab.redaction import save_config
from embedlab.resume import check_same_run, resumed_arguments
from embedlab.run_folder import (
    CONFIG_FILE,
    HYDRA_DIR,
    MODEL_DIR,
    exclusive_use,
    remove_outputs,
    run_outputs,
)

HYDRA_ERRORS = (ConfigCompositionException, OverrideParseException, SearchPathException)
CONFIG_ERRORS = (MissingMandatoryValue, InterpolationResolutionError)
# Where a Hydra message about a missing config ends its useful part (the search path is for Hydra's developers).
SEARCH_PATH = "Config search path"


def entry_point(config_name: str, resumes: str | None = None) -> Callable[[Callable[[DictConfig], object]],
                                                                         Callable[[], object]]:
    """`main = entry_point("train")(task)`: `task(cfg)` runs under Hydra with the config `conf/<config_name>.yaml`.
    With `resumes`, `resume=<run dir>` resumes the run in that folder (embedlab.resume): "checkpoint" from its last
    checkpoint, "stages" reusing the stages it finished."""

    def wrap(task: Callable[[DictConfig], object]) -> Callable[[], object]:
        @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
        def hydra_main(cfg: DictConfig):
            with one_line_errors(), claimed_run_folder(cfg):
                return task(cfg)

        def main():
            quiet_false_warnings()
            # Hydra then raises its own errors (a typo'd key, an unknown option) rather than printing them with advice,
            # so that they reach the user as one line too.
            os.environ.setdefault("HYDRA_FULL_ERROR", "1")
            with one_line_errors():
                if resumes:
                    sys.argv[1:] = resumed_arguments(sys.argv[1:], from_checkpoint=resumes == "checkpoint")
                return hydra_main()

        return main

    return wrap


@contextlib.contextmanager
def claimed_run_folder(cfg: DictConfig):
    """While inside, the run directory is this run's alone: no other process may write there, and an earlier run's
    outputs stay untouched unless this run resumes it or `overwrite=true` replaces it. Its config is saved on entry."""
    # Only one process writes: DDP's other ranks run this same entry point.
    if rank_zero_only.rank != 0:
        yield
        return
    run_dir = Path(cfg.paths.output_dir)
    with exclusive_use(run_dir):
        try:
            take_over(cfg, run_dir)
        except ConfigError:
            remove_empty_log(run_dir)
            raise
        save_config(cfg, run_dir / CONFIG_FILE)
        save_hydra_record(cfg, run_dir)
        try:
            yield
        except TrainingInterrupted as interrupted:
            raise TrainingInterrupted(f"{interrupted}; resume with: {invoked_as()} resume={run_dir}") from None


def take_over(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse a folder holding an earlier run, unless this run resumes it (and is the same run) or replaces it."""
    outputs = run_outputs(run_dir)
    if cfg.get("resume"):
        check_same_run(cfg, run_dir)
    elif outputs:
        if not cfg.get("overwrite"):
            found = ", ".join(str(path.relative_to(run_dir)) for path in outputs[:3])
            # Only the ways this entry point's config has.
            ways = [f"resume it with resume={run_dir}" if "resume" in cfg else "choose another hydra.run.dir",
                    *(["replace it with overwrite=true"] if "overwrite" in cfg else [])]
            raise ConfigError(f"run folder {run_dir} holds an earlier run ({found}); {', or '.join(ways)}")
        remove_outputs(run_dir)
    recover_interrupted_save(run_dir / MODEL_DIR)


def remove_empty_log(run_dir: Path) -> None:
    """Hydra opens this job's log file in the run folder before the folder is claimed: a run refused the folder
    leaves no empty one behind."""
    if HydraConfig.initialized():
        log_file = run_dir / f"{HydraConfig.get().job.name}.log"
        if log_file.is_file() and log_file.stat().st_size == 0:
            log_file.unlink()


def save_hydra_record(cfg: DictConfig, run_dir: Path) -> None:
    """What Hydra writes into .hydra/ (conf/hydra/default.yaml turns Hydra's own writing off, since it would come
    before the folder is claimed): the job's config, Hydra's config, and the command line's overrides."""
    if not HydraConfig.initialized():
        return
    hydra_config = HydraConfig.get()
    folder = run_dir / HYDRA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_config}), folder / "hydra.yaml")
    OmegaConf.save(hydra_config.overrides.task, folder / "overrides.yaml")


def invoked_as() -> str:
    """The command that started this process, for a line telling the user what to run next."""
    script = sys.argv[0]
    return f"python {script}" if script.endswith(".py") else Path(script).name


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
    message = _user_message(error)
    if message is not None:
        # One line, whatever the message holds: a row's line breaks, or bytes that are not UTF-8.
        printable = " ".join(message.split("\n")).encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"embedlab: error: {printable}", file=sys.stderr)
    return message is not None


def _user_message(error: BaseException) -> str | None:
    """What to tell the user of an error caused by their configuration or data; None for anything else (a bug)."""
    cause = user_error(error)
    if cause is not None:
        return str(cause)
    if isinstance(error, HYDRA_ERRORS):
        unknown = error.__cause__
        if isinstance(unknown, (ConfigKeyError, ConfigAttributeError)) and unknown.full_key:
            return (f"there is no key {unknown.full_key} in the config (a typo? `--cfg job` prints the config, "
                    "every key of it)")
        message = _joined(str(error))
        return f"{error.override}: {message}" if isinstance(error, OverrideParseException) else message
    while error is not None:
        if isinstance(error, CONFIG_ERRORS):
            return f"{error.full_key}: {first_line(error)}" if error.full_key else first_line(error)
        error = error.__cause__
    return None


def _joined(message: str) -> str:
    """A multi-line Hydra message as one line: its lines joined by "; ", an indented list by commas."""
    parts: list[str] = []
    for line in message.splitlines():
        if line.startswith(SEARCH_PATH):
            break
        if not line.strip():
            continue
        if line[:1].isspace() and parts:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line.strip()
        else:
            parts.append(line.strip())
    return "; ".join(parts)


class _Advert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


ADVERT = _Advert()


def quiet_false_warnings() -> None:
    """Silence what Lightning and torch print that is false, or says nothing, for an embedlab run."""
    # embedlab's sampler skips the batches an interrupted epoch already trained on, so a mid-epoch resume is exact
    # (tests/test_resume.py); Lightning cannot see that and warns of unreliable results.
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")
    # The folder is this run's (claimed_run_folder): a checkpoint already there is its own, saved before a resume.
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty")
    # The evaluation callback gathers every process's share and logs the same figures on each (sync_dist=False by
    # design): averaging equal values across processes would change nothing.
    warnings.filterwarnings("ignore", message=r".*It is recommended to use `self\.log\('(dev|test)/.*sync_dist=True")
    # Lightning's own pytree helper calls what torch deprecated; nothing the user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # An advertisement for Lightning's cloud logging service, printed by every Trainer; nothing about this run.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(ADVERT)
