"""Throughput regression guard: `python scripts/check_throughput.py paths.data_dir=<dir> [benchmark overrides]`.

Runs a short interleaved benchmark (embedlab.recipes.benchmark) of the jobs named in scripts/throughput_baseline.json,
with its `overrides` (few steps, 3 repeats), and exits 1 when any job's ratio, the project's throughput over
sentence-transformers' in the same run, falls below that job's `min_ratio`. Ratios rather than absolute numbers,
because on a shared machine both sides slow down together. Not part of CI: timings there are too noisy.
Raise a `min_ratio` once a speed-up is measured on an idle machine, so that it cannot silently regress.
"""

import json
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from embedlab.cli import report_errors
from embedlab.config import CONF_DIR
from embedlab.recipes.benchmark import regressions, run_benchmark

BASELINE = Path(__file__).resolve().parent / "throughput_baseline.json"


def check(argv: list[str]) -> int:
    baseline = json.loads(BASELINE.read_text())
    min_ratio = baseline["min_ratio"]
    with tempfile.TemporaryDirectory(prefix="check_throughput_") as work_dir:
        overrides = [*baseline["overrides"], f"jobs=[{','.join(min_ratio)}]", f"paths.output_dir={work_dir}", *argv]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            results = run_benchmark(compose("benchmark", overrides=overrides), Path(work_dir))
    for job, threshold in min_ratio.items():
        print(f"{job}: ratio {results[f'{job}/ratio']:.2f} (baseline {threshold:.2f})")
    problems = regressions(results, min_ratio)
    for problem in problems:
        print(f"throughput regression: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(report_errors(lambda: check(sys.argv[1:])))
