"""The domain-adaptation pipeline: TSDAE on an unlabelled in-domain corpus, then an optional supervised stage.

Stages, each in `<run dir>/<stage>` (a rerun skips what is done: a training stage whose results.json exists, an
evaluation whose evaluation.json exists):
1. `base`: the starting model, evaluated only;
2. `tsdae`: `python -m embedlab.train` with the `domain_adapt.tsdae` overrides, starting from the base model;
3. `tsdae_supervised` (skipped when `domain_adapt.supervised` is null): the same with the `domain_adapt.supervised`
   overrides, starting from the TSDAE model;
4. `supervised` (only with `domain_adapt.supervised_control=true`): the supervised stage from the base model, the
   control that tells what TSDAE adds.
Every stage's model is scored by the same evaluators (`domain_adapt.evaluators`: an in-domain set such as BIOSSES
and a general one such as STSB test), and results.json holds `<stage>/<evaluator>/<metric>` keys.
"""

import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from embedlab.augmented_sbert import prefixed, run_stage
from embedlab.encoder import SentenceEncoder
from embedlab.evaluation.runner import run_evaluators

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.paths.output_dir)
    settings = cfg.domain_adapt
    # The evaluation sets load first: a missing one stops the pipeline before hours of training.
    evaluators = instantiate(evaluator_configs(settings), _convert_="all")
    shared = [f"paths.data_dir={cfg.paths.data_dir}", f"seed={cfg.seed}", f"precision={cfg.precision}"]
    results: dict[str, float] = {}

    results.update(prefixed("base", evaluate_stage("base", settings.start, evaluators, run_dir)))
    results.update(trained_stage("tsdae", settings.start, settings.tsdae, shared, evaluators, run_dir))
    stages = ["base", "tsdae"]
    if settings.supervised is not None:
        results.update(trained_stage("tsdae_supervised", run_dir / "tsdae" / "model", settings.supervised, shared,
                                     evaluators, run_dir))
        stages.append("tsdae_supervised")
        if settings.supervised_control:
            results.update(trained_stage("supervised", settings.start, settings.supervised, shared, evaluators,
                                         run_dir))
            stages.append("supervised")

    (run_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(comparison_table(results, stages, list(settings.table)))
    return results


def trained_stage(stage: str, start, overrides: list[str], shared: list[str], evaluators: dict,
                  run_dir: Path) -> dict[str, float]:
    """`python -m embedlab.train` from `start` with the stage's overrides, then its model evaluated; keys
    "<stage>/..."."""
    trained = run_stage(stage, [f"backbone.name_or_path={start}", *overrides, *shared], run_dir)
    metrics = {"train/samples_per_second": trained["train/samples_per_second"],
               **evaluate_stage(stage, run_dir / stage / "model", evaluators, run_dir)}
    return prefixed(stage, metrics)


def evaluator_configs(settings: DictConfig) -> dict:
    """`domain_adapt.evaluators` maps a result name to `<suite>/<evaluator>` of the suites loaded from conf/eval;
    each evaluator is renamed so that its keys read `<result name>/<metric>`."""
    configs = {}
    for name, reference in settings.evaluators.items():
        suite, _, evaluator = reference.partition("/")
        config = OmegaConf.to_container(settings.suites[suite].evaluators[evaluator], resolve=True)
        configs[name] = {**config, "name": name}
    return configs


def evaluate_stage(stage: str, model_path, evaluators: dict, run_dir: Path) -> dict[str, float]:
    """The evaluators' metrics of one stage's model, cached in `<run dir>/<stage>/evaluation.json`; a rerun with
    more evaluators runs only those the cache lacks."""
    cache = run_dir / stage / "evaluation.json"
    metrics = json.loads(cache.read_text()) if cache.exists() else {}
    missing = {name: evaluator for name, evaluator in evaluators.items()
               if not any(key.startswith(f"{name}/") for key in metrics)}
    if not missing:
        log.info("stage %s: evaluated before, reusing %s", stage, cache)
        return metrics
    log.info("stage %s: evaluating %s on %s", stage, model_path, ", ".join(missing))
    new_metrics, _ = run_evaluators(SentenceEncoder.load(model_path), missing)
    metrics.update(new_metrics)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def comparison_table(results: dict[str, float], stages: list[str], columns: list[str]) -> str:
    width = max(len(stage) for stage in stages) + 2
    lines = ["\nDomain adaptation, each stage's model side by side:",
             "stage".ljust(width) + "  ".join(column.rjust(12) for column in columns)]
    for stage in stages:
        cells = [results.get(f"{stage}/{column}") for column in columns]
        lines.append(stage.ljust(width) + "  ".join(
            (f"{cell:.4f}" if cell is not None else "-").rjust(max(12, len(column)))
            for cell, column in zip(cells, columns)))
    return "\n".join(lines)
