"""The Augmented SBERT pipeline: a cross-encoder teacher on gold, silver pairs it labels, a bi-encoder on both.

Stages, each a training run of its own in `<run dir>/<stage>` (a rerun skips a stage whose results.json exists):
1. `cross_encoder`: the teacher, trained on gold;
2. the teacher and the student's starting point are compared on gold dev, with a warning if the teacher is weaker;
3. `gold_only`: the bi-encoder on gold alone, the baseline;
4. `gold_silver`: the bi-encoder on gold + silver (the silver set is sampled, labelled and cached by `data=silver`).
results.json holds each stage's metrics under its stage name, and `silver/size`.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics.functional import spearman_corrcoef

from embedlab.data.sources import load_source
from embedlab.encoder import SentenceEncoder
from embedlab.errors import EmbedlabError

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.paths.output_dir)
    settings = cfg.augsbert
    shared = [f"paths.data_dir={cfg.paths.data_dir}", f"seed={cfg.seed}"]
    results: dict[str, float] = {}

    teacher = run_stage("cross_encoder", [*settings.teacher, *shared], run_dir)
    results.update(prefixed("cross_encoder", teacher))
    results.update(compare_teacher_and_student(cfg, teacher, settings.student_start))

    results.update(prefixed("gold_only", run_stage("gold_only", [*settings.gold_only, *shared], run_dir)))
    silver_cache = run_dir / "silver"
    gold_silver = run_stage("gold_silver", [*settings.gold_silver, *shared,
                                            f"data.cross_encoder_path={run_dir / 'cross_encoder' / 'model'}",
                                            f"data.cache_dir={silver_cache}"], run_dir)
    results.update(prefixed("gold_silver", gold_silver))
    results["silver/size"] = gold_silver["silver/size"]

    (run_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    metric = "test/stsb/spearman_cosine"
    print(f"\nAugmented SBERT, STSB test Spearman of the bi-encoder:\n"
          f"  gold only     {results[f'gold_only/{metric}']:.4f}\n"
          f"  gold + silver {results[f'gold_silver/{metric}']:.4f}   ({int(results['silver/size'])} silver pairs)\n"
          f"  teacher (cross-encoder) {results['cross_encoder/test/stsb/spearman']:.4f}")
    return results


def run_stage(name: str, overrides: list[str], run_dir: Path) -> dict[str, float]:
    """One `python -m embedlab.train` run in `run_dir/name`; its results.json, reused when already there."""
    stage_dir = run_dir / name
    results_file = stage_dir / "results.json"
    if results_file.exists():
        log.info("stage %s: done before, reusing %s", name, results_file)
        return json.loads(results_file.read_text())
    log.info("stage %s: python -m embedlab.train %s", name, " ".join(overrides))
    command = [sys.executable, "-m", "embedlab.train", *overrides, f"hydra.run.dir={stage_dir}"]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise EmbedlabError(f"stage '{name}' failed with exit code {completed.returncode}; its error is printed "
                            f"above, its log is {stage_dir}/train.log")
    return json.loads(results_file.read_text())


def compare_teacher_and_student(cfg: DictConfig, teacher: dict[str, float], student_start: str) -> dict[str, float]:
    """Both on gold dev before labelling: a teacher weaker than the student's start tends to make silver hurt."""
    rows, _ = load_source(cfg.evaluation.dev, "evaluation dev")
    student = SentenceEncoder.load(student_start)
    first = student.encode([row["sentence1"] for row in rows], batch_size=64)
    second = student.encode([row["sentence2"] for row in rows], batch_size=64)
    gold = torch.tensor([row["score"] for row in rows])
    student_dev = float(spearman_corrcoef(F.cosine_similarity(first, second), gold))
    teacher_dev = teacher["dev/stsb/spearman"]
    if teacher_dev < student_dev:
        log.warning("The teacher is weaker than the student: the cross-encoder scores gold dev Spearman %.4f, the "
                    "bi-encoder before training already %.4f. Its silver labels will likely pull the student down; "
                    "train a stronger teacher (more data, epochs, or an NLI warm-up) or start from a weaker student.",
                    teacher_dev, student_dev)
    return {"teacher/dev/stsb/spearman": teacher_dev, "student_start/dev/stsb/spearman_cosine": student_dev}


def prefixed(stage: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{stage}/{key}": value for key, value in metrics.items()}
