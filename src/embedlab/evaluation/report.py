"""The written results of an evaluation, and the comparison of several runs.

An evaluation run folder holds results.json (flat: "<split>/<dataset>/<metric>" -> number, plus a few strings such
as "model/path" and "latency/device"), results.md (the same as Markdown tables, one per dataset) and, when STS or
pair classification ran, similarities.json (the cosines of positive and negative pairs, per dataset) and, when
retrieval ran, per_query.json (each query's figures, for paired tests). A training run's results.json has the same
keys.
"""

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from embedlab.errors import DataError
from embedlab.evaluation.significance import TESTED_METRIC, paired_tests_against
from embedlab.run_folder import (
    PER_QUERY_FILE,
    RESULTS_FILE,
    TRAINING_LOG,
    read_per_query,
    write_json,
)

MARKDOWN_FILE = "results.md"
SIMILARITIES_FILE = "similarities.json"

# The comparison table's columns when none are asked for: one headline figure per evaluation (bi-encoder and
# cross-encoder), then speed.
HEADLINE_KEYS = (
    "test/stsb/spearman_cosine", "test/stsb/spearman", "test/nli/accuracy", "test/sickr/spearman_cosine",
    "test/biosses/spearman_cosine", "test/liveqa-med/ndcg@10", "test/pubmedqa/ndcg@10", "test/rqe/accuracy",
    "test/sick-entailment/accuracy", "latency/sentences_per_second@32", "latency/p95_ms@1",
    "train/samples_per_second",
)


def write_results(run_dir: Path, results: dict, similarities: dict | None = None,
                  per_query: dict | None = None) -> None:
    if per_query:
        write_json(run_dir / PER_QUERY_FILE, per_query)
    write_json(run_dir / RESULTS_FILE, results)
    (run_dir / MARKDOWN_FILE).write_text(results_markdown(results))
    if similarities:
        (run_dir / SIMILARITIES_FILE).write_text(json.dumps(similarities) + "\n")


def results_markdown(results: dict) -> str:
    """One table per dataset: its metrics and their values, in key order."""
    by_dataset: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for key in sorted(results):
        dataset, _, metric = key.rpartition("/")
        by_dataset[dataset or "run"].append((metric, results[key]))
    sections = ["# Evaluation results\n"]
    for dataset, rows in by_dataset.items():
        sections.append(f"## {dataset}\n\n" + markdown_table(["metric", "value"], [list(row) for row in rows]))
    return "\n".join(sections)


def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value).replace("|", "\\|")


@dataclass
class Run:
    """One evaluated model: a folder with results.json, and where its training log and similarities are."""

    label: str
    folder: Path
    results: dict
    similarities: dict = field(default_factory=dict)
    training_log: Path | None = None
    per_query: dict = field(default_factory=dict)


def load_run(folder: str | Path) -> Run:
    """A run folder (results.json inside) or a model folder inside one (results.json beside it, as training writes).

    An evaluation of a trained model finds that model's training log through "model/path".
    """
    folder = Path(folder)
    run_dir = next((candidate for candidate in (folder, folder.parent) if (candidate / RESULTS_FILE).is_file()), None)
    if run_dir is None:
        raise DataError(f"no {RESULTS_FILE} in {folder} or its parent")
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    similarities_file = run_dir / SIMILARITIES_FILE
    similarities = json.loads(similarities_file.read_text()) if similarities_file.is_file() else {}
    log_candidates = [run_dir / TRAINING_LOG]
    if "model/path" in results:
        log_candidates.append(Path(results["model/path"]).parent / TRAINING_LOG)
    training_log = next((path for path in log_candidates if path.is_file()), None)
    # Model folders are often all called `model` (training saves <run>/model), so their parent names them.
    label = "/".join(Path(results["model/path"]).parts[-2:]) if "model/path" in results else run_dir.name
    return Run(label, run_dir, results, similarities, training_log, read_per_query(run_dir))


def load_runs(folder: str | Path) -> list[Run]:
    """`load_run`, with a pipeline's run (Augmented SBERT, domain adaptation: results keyed "<stage>/...") split into
    one run per stage, labelled "<run>/<stage>"."""
    run = load_run(folder)
    if any(key in run.results for key in HEADLINE_KEYS):
        return [run]
    stages = list(dict.fromkeys(key.split("/", 1)[0] for key in run.results
                                if key.split("/", 1)[-1] in HEADLINE_KEYS))
    if not stages:
        return [run]
    return [Run(f"{run.label}/{stage}", run.folder / stage,
                {key.split("/", 1)[1]: value for key, value in run.results.items() if key.startswith(f"{stage}/")})
            for stage in stages]


def comparison_rows(runs: list[Run], keys: list[str] | None = None) -> tuple[list[str], list[list]]:
    """Columns (model, then each key that at least one run has) and one row per run."""
    wanted = keys or list(HEADLINE_KEYS)
    present = [key for key in wanted if any(key in run.results for run in runs)]
    labels = run_labels(runs)
    return ["model", *present], [[label, *(run.results.get(key) for key in present)] for label, run in zip(labels, runs)]


def paired_test_rows(runs: list[Run]) -> tuple[list[str], list[list]]:
    """Columns and one row per (run, retrieval set) of a paired test of each later run against the first, on the
    queries both scored; no rows unless the first run and another kept per-query figures."""
    labels = run_labels(runs)
    columns = ["model", "against", "retrieval set", f"{TESTED_METRIC} difference", "p (t-test)", "p (Wilcoxon)",
               "queries"]
    tests = paired_tests_against(runs[0].per_query, [run.per_query for run in runs[1:]])
    return columns, [[labels[position + 1], labels[0], evaluator, test["mean_difference"], f"{test['p_ttest']:.3g}",
                      f"{test['p_wilcoxon']:.3g}", test["queries"]] for position, evaluator, test in tests]


def run_labels(runs: list[Run]) -> list[str]:
    """Run labels, with the folder added where two runs would otherwise share one."""
    counts = defaultdict(int)
    for run in runs:
        counts[run.label] += 1
    return [run.label if counts[run.label] == 1 else f"{run.label} ({run.folder})" for run in runs]
