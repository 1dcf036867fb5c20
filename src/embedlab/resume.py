"""Resuming a run by its folder: `python train.py resume=<dir>`, or `ckpt_path=last hydra.run.dir=<dir>`.

Before Hydra composes the config, the run's own overrides (`.hydra/overrides.yaml`) are put back on the command
line, with the data folder the run resolved (`config.yaml`), so that a resume trains the job that was interrupted
whatever the shell's environment holds now. Once composed, the config must equal the saved one but for the keys a
resume may change (when to stop, how to report); any other difference is refused, naming the key.
"""

from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from embedlab.errors import ConfigError
from embedlab.redaction import loggable_config
from embedlab.run_folder import CONFIG_FILE, OVERRIDES_FILE, run_outputs

# What a resume may change: when the run stops, how it logs and reports, how fast it loads, and which of the
# retrieval suite's cached stages run. None of them changes what the steps train on or how.
CHANGEABLE = ("trainer.max_steps", "trainer.max_epochs", "trainer.log_every_n_steps", "eval_every_n_steps",
              "data.num_workers", "logger", "callbacks", "suite.recipes", "suite.sides")
# What differs with the resume itself: how it is asked for, where the folder now is, what follows from those.
FOLLOWING = ("resume", "ckpt_path", "overwrite", "paths.output_dir", "trainer.default_root_dir",
             "trainer.val_check_interval")
# Keys of an earlier resume, which a new one sets afresh.
RESUME_KEYS = ("resume", "ckpt_path")
# Hydra's command-line flags that take the next word as their value (`--info` only a word from its list).
VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
               "-cd", "--experimental-rerun"}
INFO_FLAGS, INFO_CHOICES = {"--info", "-i"}, {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
MULTIRUN_FLAGS = {"-m", "--multirun"}


def resumed_arguments(arguments: list[str], from_checkpoint: bool = True) -> list[str]:
    """The command line with a resumed run's overrides restored (and, `from_checkpoint`, its last checkpoint);
    other command lines as they are."""
    flags, overrides = split_flags(arguments)
    given = parsed(overrides)
    run_dir = _value(given.get("resume"))
    if run_dir is None and "ckpt_path" in given and "hydra.run.dir" in given:
        # A checkpoint into a folder that holds a run resumes that run; into any other folder it starts a new one.
        run_dir = _value(given["hydra.run.dir"]) if run_outputs(_value(given["hydra.run.dir"])) else None
    if run_dir is None:
        return arguments
    if "resume" in given and "hydra.run.dir" in given and Path(_value(given["hydra.run.dir"])) != Path(run_dir):
        raise ConfigError(f"resume={run_dir} resumes the run in that folder: leave out hydra.run.dir")
    saved = _saved_overrides(Path(run_dir))
    if saved is None:
        if "resume" in given:
            raise ConfigError(f"resume={run_dir}: no run to resume there (no {OVERRIDES_FILE})")
        return arguments
    if MULTIRUN_FLAGS & set(flags):
        raise ConfigError("resume= resumes one run; a sweep resumes by its own command with hydra.sweep.dir=<its folder>")
    restored = {key: override.input_line for key, override in parsed(saved).items() if key not in RESUME_KEYS}
    data_dir = _saved_data_dir(Path(run_dir))
    if data_dir is not None:
        restored.setdefault("paths.data_dir", f"paths.data_dir={data_dir}")
    restored.update({key: override.input_line for key, override in given.items()})
    restored["resume"] = f"resume={run_dir}"
    if from_checkpoint:
        restored.setdefault("ckpt_path", "ckpt_path=last")
    restored.setdefault("hydra.run.dir", f"hydra.run.dir={run_dir}")
    return [*flags, *restored.values()]


def check_same_run(cfg: DictConfig, run_dir: Path) -> None:
    """A resumed run's config must be the saved one, but for the CHANGEABLE keys."""
    saved_file = run_dir / CONFIG_FILE
    if not saved_file.is_file():
        raise ConfigError(f"resume={run_dir}: no {CONFIG_FILE} there, so the run cannot be checked to be this one")
    saved = _flat(OmegaConf.to_container(OmegaConf.load(saved_file)))
    now = _flat(loggable_config(cfg))
    for key in sorted(saved.keys() | now.keys()):
        if saved.get(key, "<absent>") != now.get(key, "<absent>") and not _changeable(key):
            raise ConfigError(f"resume={run_dir}: {key} would be {now.get(key, '<absent>')!r}, but the run was started "
                              f"with {saved.get(key, '<absent>')!r}; a resume may change only "
                              f"{', '.join(CHANGEABLE)}")


def split_flags(arguments: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides)."""
    flags, overrides, index = [], [], 0
    while index < len(arguments):
        word, index = arguments[index], index + 1
        if not word.startswith("-"):
            overrides.append(word)
            continue
        flags.append(word)
        following = arguments[index] if index < len(arguments) else None
        if following is not None and (word in VALUE_FLAGS or (word in INFO_FLAGS and following in INFO_CHOICES)):
            flags.append(following)
            index += 1
    return flags, overrides


def parsed(overrides: list[str]) -> dict:
    """Overrides by the key (or group, with its package) they set; the last one of a key wins, as in Hydra."""
    result = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group + (f"@{override.package}" if override.package else "")
        result.pop(key, None)
        result[key] = override
    return result


def _value(override) -> str | None:
    return None if override is None or override.value() is None else str(override.value())


def _saved_overrides(run_dir: Path) -> list[str] | None:
    path = run_dir / OVERRIDES_FILE
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else None


def _saved_data_dir(run_dir: Path) -> str | None:
    path = run_dir / CONFIG_FILE
    return OmegaConf.select(OmegaConf.load(path), "paths.data_dir") if path.is_file() else None


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        return {key: inner for name, child in value.items() for key, inner in _flat(child, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): value}


def _changeable(key: str) -> bool:
    return any(key == changeable or key.startswith(f"{changeable}.") for changeable in CHANGEABLE + FOLLOWING)
