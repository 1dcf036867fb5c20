"""The report's figures: quality against throughput, metric curves over training steps, and the cosine
distribution of positive and negative pairs. Each is written as a PNG."""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt

from embedlab.evaluation.report import HEADLINE_KEYS, Run, run_labels

DPI = 120


def quality_vs_throughput(runs: list[Run], quality_key: str, speed_key: str, path: Path) -> Path | None:
    """One point per run that has both figures; None (and no file) when no run has them."""
    points = [(label, run.results[speed_key], run.results[quality_key]) for label, run in zip(run_labels(runs), runs)
              if isinstance(run.results.get(speed_key), (int, float))
              and isinstance(run.results.get(quality_key), (int, float))]
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(7, 5))
    for label, speed, quality in points:
        axes.scatter(speed, quality, s=50)
        axes.annotate(label, (speed, quality), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.set_xlabel(speed_key)
    axes.set_ylabel(quality_key)
    axes.set_title("Quality against throughput")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def training_curves(runs: list[Run], path: Path) -> Path | None:
    """Every dev/ metric, the training loss and the headline metrics of evaluation callbacks against the step, one
    line per run with a CSV training log."""
    curves = {label: read_training_log(run.training_log) for label, run in zip(run_labels(runs), runs)
              if run.training_log is not None}
    metrics = sorted({name for columns in curves.values() for name in columns
                      if name.startswith("dev/") or name == "train/loss" or name in HEADLINE_KEYS})
    if not metrics:
        return None
    figure, all_axes = plt.subplots(len(metrics), 1, figsize=(8, 3 * len(metrics)), squeeze=False)
    for axes, metric in zip(all_axes[:, 0], metrics):
        for label, columns in curves.items():
            if metric in columns:
                steps, values = zip(*columns[metric])
                axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        axes.set_title(metric)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return _save(figure, path)


def similarity_distributions(runs: list[Run], path: Path) -> Path | None:
    """Histograms of the test-pair cosines, positives against negatives: one panel per run and dataset."""
    panels = [(f"{label}: {dataset}", split) for label, run in zip(run_labels(runs), runs)
              for dataset, split in sorted(run.similarities.items())]
    if not panels:
        return None
    figure, all_axes = plt.subplots(len(panels), 1, figsize=(8, 3 * len(panels)), squeeze=False)
    for axes, (title, split) in zip(all_axes[:, 0], panels):
        for kind, colour in (("positive", "tab:green"), ("negative", "tab:red")):
            if split.get(kind):
                axes.hist(split[kind], bins=40, range=(-1, 1), alpha=0.5, color=colour,
                          label=f"{kind} ({len(split[kind])})")
        axes.set_title(title)
        axes.set_xlabel("cosine similarity")
        axes.set_ylabel("pairs")
        axes.legend(fontsize=8)
    return _save(figure, path)


def read_training_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) points of each column of a Lightning CSV log; a row holds only the metrics logged at it."""
    columns: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            for name, value in row.items():
                if name not in ("step", "epoch") and value not in ("", None):
                    columns.setdefault(name, []).append((step, float(value)))
    return columns


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
