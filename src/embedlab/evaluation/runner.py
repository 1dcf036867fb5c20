"""Running a set of evaluators on one model, and what the run costs in memory."""

import logging
import resource
import sys
import time
from collections.abc import Mapping

from embedlab.evaluation.encoding import Evaluator, Metrics

log = logging.getLogger(__name__)


def run_evaluators(model, evaluators: Mapping[str, Evaluator]
                   ) -> tuple[Metrics, dict[str, dict[str, list[float]]]]:
    """All metrics of all evaluators, and the positive/negative pair similarities of those that keep them."""
    results: Metrics = {}
    similarities = {}
    for position, (key, evaluator) in enumerate(evaluators.items(), start=1):
        log.info("evaluation %d/%d: %s", position, len(evaluators), key)
        started = time.perf_counter()
        metrics = evaluator(model)
        log.info("%s took %.1f s: %s", key, time.perf_counter() - started,
                 ", ".join(f"{name}={value:.4f}" for name, value in metrics.items() if isinstance(value, float)))
        results.update(metrics)
        if getattr(evaluator, "pair_similarities", None):
            similarities[evaluator.name] = evaluator.pair_similarities
    return results, similarities


def peak_rss_mb() -> float:
    """The largest resident memory this process has held so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
