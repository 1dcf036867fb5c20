"""Recipes as cached stages: each stage is a training run (or an evaluation) in a folder of the recipe's run
directory, done once; a rerun of the recipe reuses what is done, so a long comparison can be finished over several
commands.

A training stage composes `conf/train.yaml` with its overrides and runs in this process, as if Hydra had launched
it (`${hydra:...}` reads the stage's own values). A stage whose trainer starts several processes (DDP) runs as a
fresh `python -m embedlab.train` instead: Lightning starts the other processes by running the command line again,
which for an in-process stage would be the whole recipe's.
"""

import contextlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from embedlab.assembly import run_training
from embedlab.errors import EmbedlabError
from embedlab.evaluation.runner import run_evaluators
from embedlab.evaluation.significance import per_query_of
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.model_files import save_atomically
from embedlab.redaction import save_config
from embedlab.run_folder import (
    CONFIG_FILE,
    EVALUATION_FILE,
    LAST_CHECKPOINT,
    MODEL_DIR,
    PER_QUERY_FILE,
    read_per_query,
    read_results,
    remove_outputs,
    write_json,
)

log = logging.getLogger(__name__)


def recipe_overrides(cfg: DictConfig) -> list[str]:
    """What every stage takes from the recipe's own config: the data folder, the seed and the precision."""
    return [f"paths.data_dir={cfg.paths.data_dir}", f"seed={cfg.seed}", f"precision={cfg.precision}"]


def inline_mapping(mapping: Mapping) -> str:
    """A flat mapping as one override value, `{key: value, ...}`, quoted as YAML needs it, in the given order."""
    return "{" + OmegaConf.to_yaml(dict(mapping), sort_keys=False).strip().replace("\n", ", ") + "}"


def check_stages(*stage_overrides: list[str]) -> None:
    """Compose every stage's training config now: an override the config lacks stops the recipe at its start, not
    when the stage comes, perhaps an hour in."""
    for overrides in stage_overrides:
        compose("train", overrides=list(overrides))


def run_stage(name: str, overrides: list[str], run_dir: Path) -> dict:
    """The training run `name` in `run_dir/name` with `overrides` of the training config; its results, reused when
    the stage finished before."""
    stage_dir = run_dir / name
    done = read_results(stage_dir)
    if done is not None:
        log.info("stage %s: done before, reusing %s", name, stage_dir)
        return done
    # The stage folders belong to the recipe's run: a stage cut off resumes from its last checkpoint, or starts
    # afresh without the outputs it left.
    if (stage_dir / LAST_CHECKPOINT).is_file():
        overrides = [*overrides, "ckpt_path=last"]
    else:
        remove_outputs(stage_dir)
    log.info("stage %s: %s", name, " ".join(overrides))
    cfg = compose("train", overrides=[*overrides, f"hydra.run.dir={stage_dir}"], return_hydra_config=True)
    if str(cfg.trainer.get("strategy", "")).startswith("ddp"):
        return _run_in_fresh_process(name, overrides, stage_dir)
    with _as_hydra_job(cfg, stage_dir), _logging_to(stage_dir / "train.log"):
        save_config(cfg, stage_dir / CONFIG_FILE)
        return run_training(cfg)


def evaluate_stage(stage: str, model_path, evaluators: Mapping, run_dir: Path,
                   max_seq_length: int | None = None, precision: str = "32-true") -> dict:
    """The evaluators' metrics of one stage's model (read at `max_seq_length` tokens when given, else at its saved
    length; its weights cast to `precision`), cached in `<run dir>/<stage>/evaluation.json`; a rerun with more
    evaluators runs only those the cache lacks."""
    cache = run_dir / stage / EVALUATION_FILE
    metrics = json.loads(cache.read_text()) if cache.exists() else {}
    missing = {key: evaluator for key, evaluator in evaluators.items()
               if not any(metric.startswith(f"{evaluator.name}/") for metric in metrics)}
    if not missing:
        log.info("stage %s: evaluated before, reusing %s", stage, cache)
        return metrics
    log.info("stage %s: evaluating %s on %s", stage, model_path, ", ".join(missing))
    encoder = SentenceEncoder.load(model_path, max_seq_length=max_seq_length)
    if precision != "32-true":
        encoder = encoder.inference_copy(precision)
    new_metrics, _ = run_evaluators(encoder, missing)
    metrics.update(new_metrics)
    per_query = read_per_query(run_dir / stage)
    per_query.update(per_query_of(missing.values()))
    write_json(run_dir / stage / PER_QUERY_FILE, per_query)
    write_json(cache, metrics)
    return metrics


def stage_model(run_dir: Path, stage: str) -> Path:
    return run_dir / stage / MODEL_DIR


def publish_model(run_dir: Path, stage: str) -> Path:
    """A copy of the stage's model as the recipe's own, `<run dir>/model`, swapped in atomically."""
    source = stage_model(run_dir, stage)
    return save_atomically(run_dir / MODEL_DIR, lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True))


def prefixed(stage: str, metrics: Mapping) -> dict:
    return {f"{stage}/{key}": value for key, value in metrics.items()}


@contextlib.contextmanager
def _as_hydra_job(cfg: DictConfig, output_dir: Path):
    """While inside, the composed `cfg` (without its `hydra` node) is what a Hydra launch of it would give the job:
    `${hydra:runtime.output_dir}` is `output_dir`, `${hydra:runtime.choices.loss}` the stage's loss."""
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(output_dir)
    hydra_config.set_config(cfg)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    try:
        yield cfg
    finally:
        hydra_config.cfg = previous


@contextlib.contextmanager
def _logging_to(path: Path):
    """The stage's log lines also go to its own train.log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run_in_fresh_process(name: str, overrides: list[str], stage_dir: Path) -> dict:
    command = [sys.executable, "-m", "embedlab.train", *overrides, f"hydra.run.dir={stage_dir}"]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise EmbedlabError(f"stage '{name}' failed with exit code {completed.returncode}; its error is printed "
                            f"above, its log is {stage_dir}/train.log")
    return read_results(stage_dir)
