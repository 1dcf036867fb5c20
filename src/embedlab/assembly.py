"""One wiring of a training run from its config, and the run itself: what `python train.py` does, and what every
recipe stage and the benchmark build.

Writes into the run directory: the logs, checkpoints/, model/ (sentence-transformers layout) and results.json with
keys "<split>/<dataset>/<metric>", "train/samples_per_second", "train/seconds_per_step" and the fit's peak
memory ("train/peak_rss_mb"; "train/peak_gpu_memory_mb" on a GPU).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from embedlab.config_checks import check_training_config
from embedlab.data.base import EmbeddingDataModule
from embedlab.errors import ConfigError, EmbedlabError
from embedlab.evaluation.callback import EvaluationCallback
from embedlab.evaluation.significance import per_query_of
from embedlab.losses.signature import configured_loss_class, configured_losses
from embedlab.modeling.hub import push_model
from embedlab.modeling.model_card import write_model_card
from embedlab.modeling.model_files import load_checkpoint
from embedlab.modeling.precision import resolve_precision
from embedlab.objectives.callbacks import EvaluateAtEnd, ThroughputMeter
from embedlab.objectives.sharding import check_strategy, full_weights
from embedlab.redaction import loggable_config
from embedlab.run_folder import (
    LAST_CHECKPOINT,
    MODEL_DIR,
    PER_QUERY_FILE,
    RESULTS_FILE,
    run_outputs,
    write_json,
)

log = logging.getLogger(__name__)


class TrainingInterrupted(EmbedlabError):
    """SIGINT or SIGTERM stopped the fit; the checkpoint to resume from is saved. The entry point adds how to
    resume, as it knows the folder a recipe's stage belongs to."""


@dataclass
class Run:
    module: L.LightningModule
    datamodule: EmbeddingDataModule
    trainer: L.Trainer
    throughput: ThroughputMeter
    evaluation: EvaluationCallback | None = None


def config_choice(cfg: DictConfig, group: str) -> str:
    """The option chosen for a config group (`loss=mnr` gives 'mnr'), for messages."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return choice
    return cfg[group]._target_.rsplit(".", 1)[-1]


def checked_loss_class(cfg: DictConfig) -> type:
    """The class declaring the configured loss (the first source's, for a mixture of sources); every source's loss
    must consume what the model produces. Read from the config alone, before anything loads."""
    model_class = get_class(cfg.model._target_)
    loss_classes = {source: configured_loss_class(loss) for source, loss in configured_losses(cfg).items()}
    for source, loss_class in loss_classes.items():
        if loss_class.consumes != model_class.produces:
            name = config_choice(cfg, "loss") if len(loss_classes) == 1 else f"data.losses.{source}"
            raise ConfigError(f"loss '{name}' consumes {loss_class.consumes} but model "
                              f"'{config_choice(cfg, 'model')}' produces {model_class.produces}")
    if len(loss_classes) > 1 and model_class.evaluates != "embeddings":
        raise ConfigError(f"model '{config_choice(cfg, 'model')}' trains one loss; a mixture of sources trains a "
                          "bi-encoder")
    return next(iter(loss_classes.values()))


def build_datamodule(cfg: DictConfig, eval_inputs: dict | None = None) -> EmbeddingDataModule:
    """The data module, its format chosen for the loss: a loss that does not fit the data fails here, naming both
    sides, before any model loads or any training row is read."""
    loss_class = checked_loss_class(cfg)
    datamodule = instantiate(cfg.data, eval_inputs=eval_inputs or {}, _convert_="all")
    datamodule.fit_loss(config_choice(cfg, "loss"), loss_class)
    return datamodule


def build_evaluation(cfg: DictConfig) -> EvaluationCallback | None:
    """The evaluators of `evaluation` (their data loads here), checked against what the model produces."""
    if not cfg.get("evaluation"):
        return None
    evaluation = EvaluationCallback(instantiate(cfg.evaluation, _convert_="all"))
    evaluation.check_model(config_choice(cfg, "model"), get_class(cfg.model._target_).evaluates)
    return evaluation


def build_run(cfg: DictConfig, callbacks: tuple[L.Callback, ...] = (), evaluate: bool = True) -> Run:
    """The module, the data module and the trainer of a training run; `evaluate=False` leaves the evaluators out."""
    checked_loss_class(cfg)
    check_strategy(cfg.trainer)
    evaluation = build_evaluation(cfg) if evaluate else None
    eval_inputs = {split: evaluation.inputs(split) for split in ("dev", "test")} if evaluation else {}
    datamodule = build_datamodule(cfg, eval_inputs)
    module = get_class(cfg.model._target_).from_config(cfg)
    throughput = ThroughputMeter()
    configured = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    all_callbacks = [*configured, throughput, *([evaluation] if evaluation else []), *callbacks]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=all_callbacks, logger=loggers or False,
                                     precision=resolve_precision(cfg.trainer.precision, trainer_device(cfg.trainer)))
    return Run(module, datamodule, trainer, throughput, evaluation)


def trainer_device(trainer_cfg: DictConfig) -> str:
    """The kind of device a trainer config trains on, for choosing its precision."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def run_training(cfg: DictConfig) -> dict[str, float]:
    """Fit, save the model, evaluate it (dev and test) and write results.json, the run's last file; returns the
    results."""
    check_training_config(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), run_dir)
    L.seed_everything(cfg.seed, workers=True)
    run = build_run(cfg, callbacks=(EvaluateAtEnd(),))
    trainer, module, datamodule = run.trainer, run.module, run.datamodule
    if trainer.is_global_zero:
        # Gone before anything of this run is written, so that no reader pairs it with this run's model.
        (run_dir / RESULTS_FILE).unlink(missing_ok=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(loggable_config(cfg))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        raise TrainingInterrupted(f"training interrupted at step {trainer.global_step}") from None
    if cfg.save_model == "best":
        load_best(trainer, module)
    if cfg.merge_with_start:
        module.merge_with_start(cfg)
        log.info("merged with the starting model: %g of its weights", cfg.merge_with_start)
    # Saved before the final evaluation, so that callbacks of the test stage (the W&B artefact) find the folder.
    with full_weights(trainer):
        if trainer.is_global_zero:
            module.save_model(run_dir / MODEL_DIR)
    results = {}
    for metrics in trainer.validate(module, datamodule=datamodule) + trainer.test(module, datamodule=datamodule):
        results.update(metrics)
    results["train/samples_per_second"] = run.throughput.samples_per_second
    results["train/seconds_per_step"] = run.throughput.seconds_per_step
    results.update(run.throughput.peak_memory_mb)
    results.update(datamodule.stats())
    if trainer.is_global_zero:
        train_rows = len(datamodule.train_rows) if datamodule.train_rows is not None else None
        write_model_card(run_dir, cfg, results, train_rows, module.evaluates)
        if run.evaluation and (per_query := per_query_of(run.evaluation.evaluators())):
            write_json(run_dir / PER_QUERY_FILE, per_query)
        write_json(run_dir / RESULTS_FILE, results)
        log.info("results: %s", results)
        # After results.json: the upload writes nothing into the run, and a failed one leaves a finished run.
        if cfg.get("push_to_hub"):
            log.info("pushed %s to %s", run_dir / MODEL_DIR, push_model(run_dir / MODEL_DIR, cfg.push_to_hub))
    return results


def resume_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from (`last` is this run directory's checkpoints/last.ckpt), checked to be one."""
    if ckpt_path is None:
        return None
    path = run_dir / LAST_CHECKPOINT if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = ""
        if ckpt_path == "last":
            hint = (" (the run saved none: start it again with overwrite=true)" if run_outputs(run_dir) else
                    " (resume=<run folder> resumes an interrupted run in its own folder)")
        raise ConfigError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    if "loops" not in load_checkpoint(path):
        raise ConfigError(f"ckpt_path={ckpt_path}: {path} holds weights only, no training state to resume from")
    return str(path)


def load_best(trainer: L.Trainer, module: L.LightningModule) -> None:
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        log.warning("save_model=best but no checkpoint monitored a metric; saving the final model")
        return
    module.load_state_dict(load_checkpoint(best)["state_dict"])
    log.info("restored the best checkpoint %s", best)
