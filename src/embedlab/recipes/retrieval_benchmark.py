"""Retrieval recipes side by side: `python scripts/benchmark.py suite=retrieval paths.data_dir=<dir> [full=true]`.

For each recipe, embedlab's version and sentence-transformers' own train on the same rows (a seeded subset of the
MedQuAD training side; `full=true`: all of it), from the same model, with the same batch, epochs, learning rate,
seed, precision and passage length:
1. `mnr`: in-batch negatives;
2. `mnr_mined`: plus one mined hard negative per pair, each side mining with its own function and the same settings;
3. `mnr_siblings`: plus one negative per pair from the data's groups (embedlab.data.group_negatives: with chance
   `suite.group_negatives.share` another answer about the same focus), the same rows for both sides;
4. `gist`: GISTEmbed, the starting model as the guide;
5. `margin_mse`: MarginMSE on the same teacher scores (a cross-encoder trained on the mined pairs, as
   embedlab.recipes.distillation trains it), shared by both sides.
`suite.merge_with_start` moves each of embedlab's trained models that share of the way back to the starting model
(WiSE-FT, a step sentence-transformers has no counterpart of; 0, the default, keeps the two sides' recipes the same).
Each (recipe, side) is a cached stage in `<run dir>/<recipe>/<side>`, so a long comparison can be finished over
several commands (`resume=<run dir>`), and `suite.sides=[embedlab]` runs one side alone. Every model is scored by
the same evaluators (the dev split, LiveQA-Med, STSB test); a paired t-test (and a Wilcoxon signed-rank test) on the
per-query nDCG@10 of the dev split compares each recipe with in-batch MNR of the same side, and each side's best
recipe with the other side's.
"""

import logging
import time
from pathlib import Path

from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, read_write

from embedlab.assembly import build_datamodule
from embedlab.errors import ConfigError
from embedlab.evaluation.significance import paired_test
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.precision import resolve_precision
from embedlab.recipes import distillation
from embedlab.recipes.mining import MiningSettings, mine_hard_negatives
from embedlab.recipes.reference import ReferenceSettings, train_sentence_transformers
from embedlab.recipes.stages import (
    evaluate_stage,
    inline_mapping,
    prefixed,
    run_stage,
    stage_model,
)
from embedlab.run_folder import read_per_query, read_results, write_json

log = logging.getLogger(__name__)
RECIPES = ("mnr", "mnr_mined", "mnr_siblings", "gist", "margin_mse")
PROJECT, REFERENCE = "embedlab", "sentence_transformers"
SIDES = (PROJECT, REFERENCE)
# sentence-transformers' side logs its progress every this many steps (embedlab's side logs through its trainer).
REFERENCE_LOG_EVERY = 50


def benchmark_retrieval(cfg: DictConfig) -> dict:
    """Every recipe on both sides, evaluated and compared; the table printed, results.json in the run directory."""
    suite, run_dir = cfg.suite, Path(cfg.paths.output_dir)
    for key, known in (("recipes", RECIPES), ("sides", SIDES)):
        unknown = sorted(set(suite[key]) - set(known))
        if unknown or not suite[key]:
            raise ConfigError(f"suite.{key}: {f'unknown {unknown}' if unknown else 'empty'}; known: {', '.join(known)}")
    with read_write(suite):
        # Both sides train in one concrete precision, the one `auto` picks once here.
        suite.precision = resolve_precision(suite.precision, cfg.device)
    evaluator_keys = suite.full_evaluators if cfg.full else suite.evaluators
    # The evaluation sets load first: a missing one stops the suite before hours of training.
    evaluators = {key: instantiate(suite.evaluation[key], _convert_="all") for key in evaluator_keys}
    rows = training_rows(cfg)
    results: dict = {"suite/rows": len(rows), "suite/full": bool(cfg.full), "suite/precision": suite.precision}
    # The starting model read at the passage length the recipes train and are saved with.
    results.update(prefixed("base", evaluate_stage("base", cfg.model_path, evaluators, run_dir, suite.max_seq_length,
                                                   suite.eval_precision)))
    for recipe in suite.recipes:
        data = recipe_data(cfg, recipe, rows, run_dir)
        for side in suite.sides:
            stage = f"{recipe}/{side}"
            trained = (train_project(cfg, recipe, data[PROJECT], run_dir) if side == PROJECT
                       else train_reference(cfg, recipe, data[REFERENCE], run_dir / stage))
            results[f"{stage}/train/samples_per_second"] = trained["train/samples_per_second"]
            results.update(prefixed(stage, evaluate_stage(stage, stage_model(run_dir, stage), evaluators, run_dir,
                                                          precision=suite.eval_precision)))
    dev = evaluators[evaluator_keys[0]].name
    results.update(significance(cfg, dev, run_dir, results))
    write_json(run_dir / "results.json", results)
    print(table(cfg, dev, results))
    return results


def training_rows(cfg: DictConfig, extra_overrides: tuple[str, ...] = ()) -> list[dict]:
    """The (anchor, positive) rows both sides train on: `suite.rows` of the training side, seeded; all with full."""
    datamodule = build_datamodule(compose("train", overrides=[*project_overrides(cfg), *extra_overrides]))
    rows, origin = datamodule.load_train(datamodule.format)
    log.info("retrieval suite: %d training pairs from %s", len(rows), origin)
    return rows


def project_overrides(cfg: DictConfig, rows_file: Path | None = None, columns: list[str] | None = None) -> list[str]:
    """The training settings both sides share, as `python train.py` overrides: on the suite's MedQuAD pairs, or on
    a rows file (mined or teacher-scored rows) with the given columns."""
    suite = cfg.suite
    data = (distillation.pairs_data(rows_file, columns) if rows_file is not None
            else ["data=medquad", *([] if cfg.full else [f"data.max_rows={suite.rows}"])])
    return [*data, f"paths.data_dir={cfg.paths.data_dir}", f"seed={cfg.seed}",
            f"backbone.name_or_path={cfg.model_path}", f"backbone.max_seq_length={suite.max_seq_length}",
            f"data.batch_size={suite.batch_size}", f"optim.lr={suite.lr}", f"optim.warmup_ratio={suite.warmup_ratio}",
            f"trainer.max_epochs={suite.epochs}", f"precision={suite.precision}", "evaluation=[]",
            f"merge_with_start={suite.merge_with_start}",
            # Shuffled batches, not length-grouped ones (data=pairs groups by default): sentence-transformers' side
            # draws its batches so, and grouping alone changes which in-batch negatives a row meets.
            "data.group_by_length=false"]


def recipe_data(cfg: DictConfig, recipe: str, rows: list[dict], run_dir: Path) -> dict:
    """Each side's training rows for a recipe: the shared pairs, each side's own mined rows, or the shared
    teacher-scored rows."""
    if recipe in ("mnr", "gist"):
        return {PROJECT: None, REFERENCE: rows}
    if recipe == "mnr_siblings":
        return sibling_rows(cfg, run_dir)
    mined = mined_rows(cfg, rows, run_dir)
    if recipe == "mnr_mined":
        return mined
    scored = teacher_scored(cfg, mined[PROJECT], run_dir)
    return {PROJECT: scored, REFERENCE: distillation.read_rows(scored)}


def mined_rows(cfg: DictConfig, rows: list[dict], run_dir: Path) -> dict:
    """Hard negatives mined among the pairs' own answers by each side, with the same settings; cached files. The
    teacher of margin_mse reads embedlab's, so those are mined whichever sides run."""
    settings = dict(cfg.suite.mining)
    ours, theirs = run_dir / "mined" / f"{PROJECT}.jsonl", run_dir / "mined" / f"{REFERENCE}.jsonl"
    if not ours.exists():
        encoder = SentenceEncoder.load(cfg.model_path, max_seq_length=cfg.suite.max_seq_length)
        distillation.write_rows(ours, mine_hard_negatives(encoder, rows, MiningSettings(**settings),
                                                          batch_size=cfg.suite.encode_batch_size))
    if REFERENCE not in cfg.suite.sides:
        return {PROJECT: ours}
    if not theirs.exists():
        distillation.write_rows(theirs, mine_with_sentence_transformers(cfg, rows, settings))
    return {PROJECT: ours, REFERENCE: distillation.read_rows(theirs)}


def sibling_rows(cfg: DictConfig, run_dir: Path) -> dict:
    """The suite's rows, each with one negative from its focus group as `data.group_negatives` draws it (the same
    rows and draw as the suite's subset: the subset is sampled by position); one cached file for both sides."""
    path = run_dir / "siblings" / "rows.jsonl"
    if not path.exists():
        negatives = inline_mapping(OmegaConf.to_container(cfg.suite.group_negatives))
        distillation.write_rows(path, training_rows(cfg, (f"data.group_negatives={negatives}",)))
    return {PROJECT: path, REFERENCE: distillation.read_rows(path)}


def mine_with_sentence_transformers(cfg: DictConfig, rows: list[dict], settings: dict) -> list[dict]:
    import datasets
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as reference_mining

    model = SentenceTransformer(str(cfg.model_path), device=cfg.device)
    model.max_seq_length = cfg.suite.max_seq_length
    mined = reference_mining(
        datasets.Dataset.from_list([{"anchor": row["anchor"], "positive": row["positive"]} for row in rows]), model,
        num_negatives=settings["num_negatives"], range_min=settings["range_min"], range_max=settings["range_max"],
        absolute_margin=settings["absolute_margin"], relative_margin=settings["relative_margin"],
        max_score=settings["max_score"], min_score=settings["min_score"], sampling_strategy=settings["sampling"],
        output_format="n-tuple", output_scores=True, batch_size=cfg.suite.encode_batch_size, verbose=False)
    return mined.to_list()


def teacher_scored(cfg: DictConfig, mined_path: Path, run_dir: Path) -> Path:
    """The mined rows with a cross-encoder teacher's scores: the teacher trained on those pairs (a cached stage)."""
    pairs_path = run_dir / "teacher" / "pairs.jsonl"
    mined = distillation.read_rows(mined_path)
    distillation.write_rows(pairs_path, distillation.teacher_pairs(mined))
    run_stage("teacher", [*cfg.suite.teacher, f"backbone.name_or_path={cfg.model_path}",
                          f"paths.data_dir={cfg.paths.data_dir}", f"seed={cfg.seed}",
                          *distillation.pairs_data(pairs_path, ["sentence1", "sentence2", "score"])], run_dir)
    scored = run_dir / "teacher" / "scored.jsonl"
    distillation.scored_rows(mined, stage_model(run_dir, "teacher"), scored, cfg.suite.encode_batch_size)
    return scored


def train_project(cfg: DictConfig, recipe: str, data: Path | None, run_dir: Path) -> dict:
    """embedlab's side: a training stage of the recipe's loss on the shared pairs, or on a rows file."""
    columns = None
    if data is not None:
        columns = [key for key in distillation.read_rows(data)[0] if key != "scores" or recipe == "margin_mse"]
    loss = {"mnr": "mnr", "mnr_mined": "mnr", "mnr_siblings": "mnr", "gist": "gist", "margin_mse": "margin_mse"}[recipe]
    return run_stage(f"{recipe}/{PROJECT}", [*project_overrides(cfg, data, columns), f"loss={loss}"], run_dir)


def train_reference(cfg: DictConfig, recipe: str, rows: list[dict], stage_dir: Path) -> dict:
    """sentence-transformers' side: its model and loss, trained by its trainer's recipe, saved with its results."""
    done = read_results(stage_dir)
    if done is not None:
        log.info("stage %s: done before, reusing it", stage_dir)
        return done
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    suite = cfg.suite
    model = SentenceTransformer(str(cfg.model_path), device=cfg.device)
    model.max_seq_length = suite.max_seq_length
    with_negatives = recipe in ("mnr_mined", "mnr_siblings", "margin_mse")
    columns = ["anchor", "positive", *(distillation.negative_columns(rows[0]) if with_negatives else [])]
    if recipe == "gist":
        loss = losses.GISTEmbedLoss(model, SentenceTransformer(str(cfg.model_path), device=cfg.device))
    elif recipe == "margin_mse":
        loss = losses.MarginMSELoss(model)
    else:
        loss = losses.MultipleNegativesRankingLoss(model)
    rows_trained, started = 0, time.perf_counter()

    def count(step: int, batch_rows: int) -> None:
        nonlocal rows_trained
        rows_trained += batch_rows
        if step % REFERENCE_LOG_EVERY == 0:
            log.info("stage %s: step %d, %d of %d pairs, %.1f pairs/s", stage_dir, step, rows_trained,
                     len(rows) * suite.epochs, rows_trained / (time.perf_counter() - started))

    settings = ReferenceSettings(batch_size=suite.batch_size, lr=suite.lr, warmup_ratio=suite.warmup_ratio,
                                 epochs=suite.epochs, seed=cfg.seed, precision=suite.precision,
                                 no_duplicates=recipe != "margin_mse")
    train_sentence_transformers(model, rows, columns, "scores" if recipe == "margin_mse" else None, loss, settings,
                                on_step=count)
    results = {"train/samples_per_second": rows_trained / (time.perf_counter() - started)}
    model.save(str(stage_dir / "model"))
    write_json(stage_dir / "results.json", results)
    return results


def significance(cfg: DictConfig, dev: str, run_dir: Path, results: dict) -> dict:
    """Paired tests on the dev split's per-query nDCG@10 (evaluator `dev`): each recipe against in-batch MNR of its
    side, and, with both sides, the best recipe of each side against the other's."""
    metric = "ndcg@10"
    sides = cfg.suite.sides
    per_query = {stage: read_per_query(run_dir / stage).get(dev, {}).get(metric)
                 for stage in (f"{recipe}/{side}" for recipe in cfg.suite.recipes for side in sides)}
    tests = {}

    def compare(name: str, first: str, second: str) -> None:
        if per_query.get(first) and per_query.get(second):
            tests.update({f"{name}/{key}": value for key, value in paired_test(per_query[first], per_query[second]).items()})

    for side in sides:
        for recipe in cfg.suite.recipes:
            if recipe != "mnr":
                compare(f"significance/{recipe}_vs_mnr/{side}", f"{recipe}/{side}", f"mnr/{side}")
    best = {side: max(cfg.suite.recipes, key=lambda r: results.get(f"{r}/{side}/{dev}/{metric}", float("-inf")))
            for side in sides}
    tests.update({f"best/{side}": recipe for side, recipe in best.items()})
    if len(best) < len(SIDES):
        return tests
    compare("significance/best_embedlab_vs_best_sentence_transformers", f"{best[PROJECT]}/{PROJECT}",
            f"{best[REFERENCE]}/{REFERENCE}")
    return tests


def table(cfg: DictConfig, dev: str, results: dict) -> str:
    columns = [(f"{dev}/ndcg@10", "dev nDCG@10"), ("test/liveqa-med/ndcg@10", "LiveQA-Med nDCG@10"),
               ("test/stsb/spearman_cosine", "STSB test"), ("train/samples_per_second", "pairs/s")]
    lines = ["| recipe | side | " + " | ".join(title for _, title in columns) + " | vs MNR (p, t-test) |",
             "|---|---|" + "---|" * (len(columns) + 1)]
    lines.append("| base | | " + " | ".join(cell(results.get(f"base/{key}")) for key, _ in columns[:3]) + " | | |")
    for recipe in cfg.suite.recipes:
        for side in cfg.suite.sides:
            stage = f"{recipe}/{side}"
            test = f"significance/{recipe}_vs_mnr/{side}"
            versus = (f"{results[f'{test}/mean_difference']:+.4f} (p={results[f'{test}/p_ttest']:.3g})"
                      if f"{test}/p_ttest" in results else "")
            lines.append(f"| {recipe} | {side} | " + " | ".join(cell(results.get(f"{stage}/{key}")) for key, _ in columns)
                         + f" | {versus} |")
    best = "significance/best_embedlab_vs_best_sentence_transformers"
    if f"{best}/p_ttest" in results:
        lines.append(f"\nBest embedlab recipe ({results['best/embedlab']}) against the best sentence-transformers "
                     f"recipe ({results['best/sentence_transformers']}): {results[f'{best}/mean_difference']:+.4f} "
                     f"dev nDCG@10, p={results[f'{best}/p_ttest']:.3g} (t-test), "
                     f"{results[f'{best}/p_wilcoxon']:.3g} (Wilcoxon), {results[f'{best}/queries']} queries")
    return "\n".join(lines)


def cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "–"

