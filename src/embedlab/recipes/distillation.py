"""Distillation from a cross-encoder, as cached stages in `<run dir>/<stage>` (a rerun reuses what is done):
1. `mined`: hard negatives for the training pairs (`data`), mined by the starting bi-encoder among the training
   side's own answers (no evaluation text is ever a candidate), with `distill.mining`'s filters;
2. `teacher`: a cross-encoder trained on those pairs, each positive labelled 1 and each mined negative 0;
3. `scored`: the teacher's score of every (anchor, positive) and (anchor, negative) pair of the mined rows;
4. `student`: the bi-encoder trained on the scored rows with a distillation loss (`distill.student`: MarginMSE by
   default, or DistillKLDiv), the teacher's scores in the `scores` column.
With `distill.teacher=null` there is no teacher: the student trains on the mined rows themselves with its own loss
(MNR with the mined negatives, say). The student's model is copied to `<run dir>/model`; results.json holds each
trained stage's metrics under its name.
"""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from embedlab.assembly import build_datamodule
from embedlab.modeling.cross_encoder import CrossEncoder
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.recipes.mining import MiningSettings, mine_hard_negatives
from embedlab.recipes.stages import (
    inline_mapping,
    prefixed,
    publish_model,
    recipe_overrides,
    run_stage,
    stage_model,
)
from embedlab.run_folder import RESULTS_FILE, write_json

log = logging.getLogger(__name__)
MINED, TEACHER_PAIRS, SCORED = "mined/mined.jsonl", "teacher/pairs.jsonl", "scored/scored.jsonl"


def run(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.paths.output_dir)
    settings = cfg.distill
    shared = recipe_overrides(cfg)
    mined = mined_rows(cfg, run_dir / MINED)
    results = {"distill/mined_rows": len(mined)}
    if settings.teacher is None:
        columns = [column for column in mined[0] if column != "scores"]
        student_rows = run_dir / MINED
    else:
        write_rows(run_dir / TEACHER_PAIRS, teacher_pairs(mined))
        teacher = run_stage("teacher", [*settings.teacher, *shared, *pairs_data(run_dir / TEACHER_PAIRS,
                                                                                ["sentence1", "sentence2", "score"])],
                            run_dir)
        results.update(prefixed("teacher", teacher))
        scored = scored_rows(mined, stage_model(run_dir, "teacher"), run_dir / SCORED, settings.score_batch_size)
        columns = [column for column in scored[0] if column != "scores"] + ["scores"]
        student_rows = run_dir / SCORED
    student = run_stage("student", [*settings.student, *shared, *pairs_data(student_rows, columns)], run_dir)
    results.update(prefixed("student", student))
    publish_model(run_dir, "student")
    write_json(run_dir / RESULTS_FILE, results)
    return results


def mined_rows(cfg: DictConfig, path: Path) -> list[dict]:
    """The training pairs with mined negatives, cached in `path`."""
    if path.exists():
        log.info("stage mined: done before, reusing %s", path)
        return read_rows(path)
    datamodule = build_datamodule(cfg)
    rows, origin = datamodule.load_train(datamodule.format)
    log.info("stage mined: %d pairs from %s", len(rows), origin)
    encoder = SentenceEncoder.load(cfg.distill.start, max_seq_length=cfg.distill.max_seq_length)
    mined = mine_hard_negatives(encoder, rows, MiningSettings(**cfg.distill.mining),
                                batch_size=cfg.distill.score_batch_size)
    write_rows(path, mined)
    return mined


def teacher_pairs(mined: list[dict]) -> list[dict]:
    """Each mined row's positive as a pair scored 1 and each negative as a pair scored 0, each pair once."""
    pairs = {}
    for row in mined:
        pairs.setdefault((row["anchor"], row["positive"]), 1.0)
        for key in negative_columns(row):
            pairs.setdefault((row["anchor"], row[key]), 0.0)
    return [{"sentence1": first, "sentence2": second, "score": score} for (first, second), score in pairs.items()]


def scored_rows(mined: list[dict], teacher_path: Path, path: Path, batch_size: int) -> list[dict]:
    """The mined rows with the teacher's scores of their positive and negatives, cached in `path`."""
    if path.exists():
        log.info("stage scored: done before, reusing %s", path)
        return read_rows(path)
    teacher = CrossEncoder.load(teacher_path)
    pairs = [(row["anchor"], row[key]) for row in mined for key in ["positive", *negative_columns(row)]]
    scores = iter(teacher.predict(pairs, batch_size=batch_size, show_progress_bar=True).tolist())
    scored = [{**{key: value for key, value in row.items() if key != "scores"},
               "scores": [next(scores) for _ in range(1 + len(negative_columns(row)))]} for row in mined]
    write_rows(path, scored)
    return scored


def pairs_data(path: Path, columns: list[str]) -> list[str]:
    """Overrides that train on a jsonl file of these columns (named as in the file) with data=pairs."""
    mapping = inline_mapping({column: column for column in columns})
    return ["data=pairs", f"data.source.local.path={path}", f"data.source.local.columns={mapping}"]


def negative_columns(row: dict) -> list[str]:
    """`negative`, `negative_1`, `negative_2`, ... in that order."""
    keys = [key for key in row if key.startswith("negative")]
    return sorted(keys, key=lambda key: int(key.rpartition("_")[2]) if key != "negative" else 0)


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    staging.replace(path)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
