"""The training entry point: `python train.py [overrides]` or `embedlab-train [overrides]`.

Writes into the Hydra run directory: config.yaml, the logs, checkpoints/, model/ (sentence-transformers layout)
and results.json with keys "<split>/<evaluator>/<metric>" and "train/samples_per_second".
"""

import json
import logging
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from embedlab.callbacks import ThroughputMeter
from embedlab.config import CONF_DIR
from embedlab.errors import ConfigError, EmbedlabError, user_error
from embedlab.losses import configured_loss_class
from embedlab.redaction import redact_secrets

log = logging.getLogger(__name__)
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


class TrainingInterrupted(EmbedlabError):
    """SIGINT or SIGTERM stopped the fit; the checkpoint to resume from is saved."""


def config_choice(cfg: DictConfig, group: str) -> str:
    """The option chosen for a config group (`loss=mnr` gives 'mnr'), for messages."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return choice
    return cfg[group]._target_.rsplit(".", 1)[-1]


def train(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), run_dir)
    L.seed_everything(cfg.seed, workers=True)

    # The checks come first: a loss that does not fit the model or the data fails before anything loads.
    model_class = get_class(cfg.model._target_)
    loss_class = configured_loss_class(cfg.loss)
    if loss_class.consumes != model_class.produces:
        raise ConfigError(f"loss '{config_choice(cfg, 'loss')}' consumes {loss_class.consumes} but model "
                          f"'{config_choice(cfg, 'model')}' produces {model_class.produces}")
    datamodule = instantiate(cfg.data, evaluation=cfg.evaluation, _convert_="all")
    text_columns = datamodule.fit_loss(config_choice(cfg, "loss"), loss_class)

    module = model_class.from_config(cfg, text_columns)
    datamodule.make_collator = module.make_collator

    meter = ThroughputMeter()
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None] + [meter]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    loggable_config = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    if trainer.is_global_zero:
        OmegaConf.save(OmegaConf.create(loggable_config), run_dir / "config.yaml")
    for logger in trainer.loggers:
        logger.log_hyperparams(loggable_config)

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        raise TrainingInterrupted(f"training interrupted at step {trainer.global_step}; resume with "
                                  f"ckpt_path=last hydra.run.dir={run_dir}") from None
    if cfg.save_model == "best":
        _load_best(trainer, module)
    # Saved before the final evaluation, so that callbacks of the test stage (the W&B artefact) find the folder.
    if trainer.is_global_zero:
        module.save_model(run_dir / "model")
    results = {}
    for metrics in trainer.validate(module, datamodule=datamodule) + trainer.test(module, datamodule=datamodule):
        results.update(metrics)
    results["train/samples_per_second"] = meter.samples_per_second
    results.update(datamodule.stats())
    if trainer.is_global_zero:
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        log.info("results: %s", json.dumps(results, sort_keys=True))
    return results


def resume_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from: `last` is this run directory's checkpoints/last.ckpt."""
    if ckpt_path is None:
        return None
    path = run_dir / LAST_CHECKPOINT if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = (" (ckpt_path=last resumes in the interrupted run's directory: set hydra.run.dir to it)"
                if ckpt_path == "last" else "")
        raise ConfigError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    return str(path)


def run_pipeline(cfg: DictConfig) -> dict[str, float]:
    """Recipes of several training runs, selected by an experiment's `pipeline` key."""
    if cfg.pipeline == "augmented_sbert":
        from embedlab import augmented_sbert

        return augmented_sbert.run(cfg)
    if cfg.pipeline == "domain_adapt":
        from embedlab import domain_adapt

        return domain_adapt.run(cfg)
    raise ConfigError(f"unknown pipeline {cfg.pipeline!r}; known: augmented_sbert, domain_adapt")


def _load_best(trainer: L.Trainer, module: L.LightningModule) -> None:
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        log.warning("save_model=best but no checkpoint monitored a metric; saving the final model")
        return
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    log.info("restored the best checkpoint %s", best)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        results = run_pipeline(cfg) if cfg.get("pipeline") else train(cfg)
    except Exception as error:
        # Hydra's instantiate wraps what a config's target raises; a config or data problem still gets its one line.
        cause = user_error(error)
        if cause is None:
            raise
        print(f"embedlab: error: {cause}", file=sys.stderr)
        sys.exit(1)
    metric = cfg.get("optimized_metric")
    return results.get(metric) if metric else None


if __name__ == "__main__":
    main()
