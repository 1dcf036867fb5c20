"""The Augmented SBERT recipe: a cross-encoder teacher on gold, silver pairs it labels, a bi-encoder on both.

Stages, each a training run of its own in `<run dir>/<stage>` (see embedlab.recipes.stages):
1. `cross_encoder`: the teacher, trained on gold;
2. the teacher and the student's starting point are compared on gold dev, with a warning if the teacher is weaker;
3. `gold_only`: the bi-encoder on gold alone, the baseline;
4. `gold_silver`: the bi-encoder on gold + silver (the silver set is sampled, labelled and cached by `data=silver`).
results.json holds each stage's metrics under its stage name, and `silver/size`.
"""

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from embedlab.modeling.encoder import SentenceEncoder
from embedlab.recipes.stages import prefixed, recipe_overrides, run_stage, stage_model
from embedlab.run_folder import RESULTS_FILE, write_json

log = logging.getLogger(__name__)
TEACHER_DEV = "dev/stsb/spearman"
STUDENT_DEV = "dev/stsb/spearman_cosine"
TEST = "test/stsb/spearman_cosine"


def run(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.paths.output_dir)
    settings = cfg.augsbert
    shared = recipe_overrides(cfg)
    results: dict[str, float] = {}

    teacher = run_stage("cross_encoder", [*settings.teacher, *shared], run_dir)
    results.update(prefixed("cross_encoder", teacher))
    results.update(compare_teacher_and_student(cfg, teacher[TEACHER_DEV], settings.student_start))

    results.update(prefixed("gold_only", run_stage("gold_only", [*settings.gold_only, *shared], run_dir)))
    gold_silver = run_stage("gold_silver", [*settings.gold_silver, *shared,
                                            f"data.cross_encoder_path={stage_model(run_dir, 'cross_encoder')}",
                                            f"data.cache_dir={run_dir / 'silver'}"], run_dir)
    results.update(prefixed("gold_silver", gold_silver))
    results["silver/size"] = gold_silver["silver/size"]

    write_json(run_dir / RESULTS_FILE, results)
    print(f"\nAugmented SBERT, STSB test Spearman of the bi-encoder:\n"
          f"  gold only     {results[f'gold_only/{TEST}']:.4f}\n"
          f"  gold + silver {results[f'gold_silver/{TEST}']:.4f}   ({int(results['silver/size'])} silver pairs)\n"
          f"  teacher (cross-encoder) {results['cross_encoder/test/stsb/spearman']:.4f}")
    return results


def compare_teacher_and_student(cfg: DictConfig, teacher_dev: float, student_start: str) -> dict[str, float]:
    """Both on gold dev before labelling: a teacher weaker than the student's start tends to make silver hurt."""
    student_dev = instantiate(cfg.evaluation.stsb_dev)(SentenceEncoder.load(student_start))[STUDENT_DEV]
    if teacher_dev < student_dev:
        log.warning("The teacher is weaker than the student: the cross-encoder scores gold dev Spearman %.4f, the "
                    "bi-encoder before training already %.4f. Its silver labels will likely pull the student down; "
                    "train a stronger teacher (more data, epochs, or an NLI warm-up) or start from a weaker student.",
                    teacher_dev, student_dev)
    return {f"teacher/{TEACHER_DEV}": teacher_dev, f"student_start/{STUDENT_DEV}": student_dev}
