"""Compare evaluated models: `python scripts/report.py RUN_OR_MODEL_DIR ... [--out DIR] [--keys K ...] [--wandb]`.

Each folder holds a results.json (an evaluation, training or pipeline run directory; a pipeline's stages become rows
of their own), or is a model folder inside one.
Writes into --out: comparison.md (one row per model; where the first model's run and another's kept
per-query retrieval figures, as scripts/evaluate.py and training with a retrieval evaluator do, also a paired t-test
and Wilcoxon test of each against the first on the queries both scored), and the PNG plots that the runs have data for:
quality_vs_throughput.png, training_curves.png (from the runs' CSV training logs) and similarity_distribution.png
(the cosines of positive and negative test pairs). --wandb logs the same table and plots to Weights & Biases
(offline with WANDB_MODE=offline).
"""

import argparse
import sys
from pathlib import Path

from embedlab.cli import report_errors
from embedlab.evaluation.plots import (
    quality_vs_throughput,
    similarity_distributions,
    training_curves,
)
from embedlab.evaluation.report import (
    comparison_rows,
    load_runs,
    markdown_table,
    paired_test_rows,
)

# The plot's axes, when not asked for: the first key any run has (evaluation runs, then training runs).
QUALITY_KEYS = ("test/stsb/spearman_cosine", "test/stsb/spearman")
SPEED_KEYS = ("latency/sentences_per_second@32", "train/samples_per_second")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="run folders (with results.json) or model folders inside them")
    parser.add_argument("--out", default="report", help="output folder (default: ./report)")
    parser.add_argument("--keys", nargs="+", help="results keys for the table (default: one headline per dataset)")
    parser.add_argument("--quality-key", help=f"y axis of the quality/throughput plot (default: {QUALITY_KEYS})")
    parser.add_argument("--speed-key", help=f"x axis of the quality/throughput plot (default: {SPEED_KEYS})")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to Weights & Biases")
    return parser.parse_args(argv)


def report(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [run for folder in args.folders for run in load_runs(folder)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = comparison_rows(runs, args.keys)
    comparison = "# Model comparison\n\n" + markdown_table(columns, rows)
    paired_columns, paired_rows = paired_test_rows(runs)
    if paired_rows:
        paired = markdown_table(paired_columns, paired_rows)
        comparison += "\n## Paired tests against the first model, per query\n\n" + paired
        print(paired, end="")
    (out / "comparison.md").write_text(comparison)
    plots = [path for path in (
        quality_vs_throughput(runs, args.quality_key or first_present(runs, QUALITY_KEYS),
                              args.speed_key or first_present(runs, SPEED_KEYS), out / "quality_vs_throughput.png"),
        training_curves(runs, out / "training_curves.png"),
        similarity_distributions(runs, out / "similarity_distribution.png"),
    ) if path is not None]
    print(f"wrote {out / 'comparison.md'}" + "".join(f", {path}" for path in plots))
    if args.wandb:
        _log_to_wandb(columns, rows, plots)
    return 0


def first_present(runs, keys: tuple[str, ...]) -> str:
    return next((key for key in keys if any(key in run.results for run in runs)), keys[0])


def _log_to_wandb(columns: list[str], rows: list[list], plots: list[Path]) -> None:
    import wandb

    with wandb.init(project="embedlab", job_type="report") as run:
        run.log({"comparison": wandb.Table(columns=columns, data=[[_cell(v) for v in row] for row in rows]),
                 **{path.stem: wandb.Image(str(path)) for path in plots}})


def _cell(value):
    """W&B table columns hold one type each; a missing figure is None."""
    return value if value is None or isinstance(value, (int, float)) else str(value)


if __name__ == "__main__":
    sys.exit(report_errors(report))
