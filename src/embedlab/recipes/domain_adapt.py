"""The domain-adaptation recipe: TSDAE on an unlabelled in-domain corpus, then an optional supervised stage.

Stages, each in `<run dir>/<stage>` (see embedlab.recipes.stages: a rerun skips what is done, a training stage by
its results.json, an evaluation by its evaluation.json):
1. `base`: the starting model, evaluated only;
2. `tsdae`: a training run with the `domain_adapt.tsdae` overrides, starting from the base model;
3. `tsdae_supervised` (skipped when `domain_adapt.supervised` is null): the same with the `domain_adapt.supervised`
   overrides, starting from the TSDAE model;
4. `supervised` (only with `domain_adapt.supervised_control=true`): the supervised stage from the base model, the
   control that tells what TSDAE adds.
Every stage's model is scored by the same evaluators (`domain_adapt.evaluation`, or those of its keys listed in
`domain_adapt.evaluators`: an in-domain set such as BIOSSES and a general one such as STSB test), and results.json
holds `<stage>/<split>/<dataset>/<metric>` keys.
"""

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from embedlab.recipes.stages import (
    check_stages,
    evaluate_stage,
    prefixed,
    recipe_overrides,
    run_stage,
    stage_model,
)
from embedlab.run_folder import RESULTS_FILE, write_json

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.paths.output_dir)
    settings = cfg.domain_adapt
    # The evaluation sets load first: a missing one stops the recipe before hours of training.
    keys = settings.get("evaluators") or list(settings.evaluation)
    evaluators = {key: instantiate(settings.evaluation[key], _convert_="all") for key in keys}
    shared = recipe_overrides(cfg)
    check_stages(*([*stage, *shared] for stage in (settings.tsdae, settings.supervised) if stage is not None))
    results: dict[str, float] = {}

    # The passage length every stage's model is read at (null: its own), so that the base model is not scored on
    # longer passages than the stages trained and saved at a shorter one.
    length = settings.eval_max_seq_length
    results.update(prefixed("base", evaluate_stage("base", settings.start, evaluators, run_dir, length)))
    results.update(trained_stage("tsdae", settings.start, settings.tsdae, shared, evaluators, run_dir, length))
    stages = ["base", "tsdae"]
    if settings.supervised is not None:
        results.update(trained_stage("tsdae_supervised", stage_model(run_dir, "tsdae"), settings.supervised, shared,
                                     evaluators, run_dir, length))
        stages.append("tsdae_supervised")
        if settings.supervised_control:
            results.update(trained_stage("supervised", settings.start, settings.supervised, shared, evaluators,
                                         run_dir, length))
            stages.append("supervised")

    write_json(run_dir / RESULTS_FILE, results)
    print(comparison_table(results, stages, list(settings.table)))
    return results


def trained_stage(stage: str, start, overrides: list[str], shared: list[str], evaluators: dict,
                  run_dir: Path, max_seq_length: int | None = None) -> dict[str, float]:
    """A training run from `start` with the stage's overrides, then its model evaluated; keys "<stage>/..."."""
    trained = run_stage(stage, [f"backbone.name_or_path={start}", *overrides, *shared], run_dir)
    metrics = {"train/samples_per_second": trained["train/samples_per_second"],
               **evaluate_stage(stage, stage_model(run_dir, stage), evaluators, run_dir, max_seq_length)}
    return prefixed(stage, metrics)


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
