"""Encoding speed: sentences per second at several batch sizes, and the latency of single queries.

Timings on a shared machine are noisy in one direction only (other work slows a run, nothing speeds it up), so
throughput is the best of a few repeats. The run records what the numbers depend on: threads, dtype, device and
the torch version.
"""

import logging
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from embedlab.errors import DataError
from embedlab.evaluation.datasets import ScoredPairs
from embedlab.evaluation.encoding import Metrics, TextEncoder

log = logging.getLogger(__name__)
EncodeFunction = Callable[[list[str], int], object]


def sample_texts(pairs: ScoredPairs, count: int) -> list[str]:
    """The first `count` distinct sentences of a pair set: realistic lengths, the same on every run."""
    texts = list(dict.fromkeys(pairs.sentence1 + pairs.sentence2))[:count]
    if len(texts) < count:
        log.warning("only %d distinct sentences for the %d requested", len(texts), count)
    return texts


def throughput(encode: EncodeFunction, texts: list[str], batch_size: int) -> float:
    """Sentences per second of one pass over `texts`."""
    started = time.perf_counter()
    encode(texts, batch_size)
    return len(texts) / (time.perf_counter() - started)


def best_throughputs(encoders: dict[str, EncodeFunction], texts: list[str], batch_size: int, repeats: int,
                     description: str = "throughput") -> dict[str, float]:
    """The best of `repeats` passes for each encoder. Passes alternate between the encoders, so a slow spell of
    the machine falls on all of them alike and their ratio stays fair."""
    best = dict.fromkeys(encoders, 0.0)
    for encode in encoders.values():
        encode(texts[:batch_size], batch_size)  # warm-up: first-call allocations and lazy initialisation
    for _ in tqdm(range(repeats), desc=description):
        for name, encode in encoders.items():
            best[name] = max(best[name], throughput(encode, texts, batch_size))
    return best


def single_query_latencies_ms(encode: EncodeFunction, texts: list[str], warmup: int = 5) -> list[float]:
    """Milliseconds to embed each text alone, as a search front end embeds one query at a time."""
    for text in texts[:warmup]:
        encode([text], 1)
    latencies = []
    for text in tqdm(texts, desc="latency: single queries"):
        started = time.perf_counter()
        encode([text], 1)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def percentile(values: list[float], percent: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * percent / 100
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


class LatencyEvaluator:
    """Keys "latency/sentences_per_second@<batch>" for each batch size, "latency/p50_ms@1", "latency/p95_ms@1",
    "latency/mean_ms@1", and the setting: "latency/threads", "latency/dtype", "latency/device",
    "latency/torch_version", "latency/num_texts"."""

    name = "latency"
    main_metric = "sentences_per_second@32"

    def __init__(self, texts: list[str], batch_sizes: Sequence[int] = (1, 32, 128), repeats: int = 3,
                 single_queries: int = 200):
        if not texts:
            raise DataError("latency needs at least one text")
        self.texts = list(texts)
        self.batch_sizes = list(batch_sizes)
        self.repeats = repeats
        self.single_queries = single_queries

    def __call__(self, encoder: TextEncoder) -> Metrics:
        encode = _encode_function(encoder)
        metrics: Metrics = {}
        for batch_size in self.batch_sizes:
            best = best_throughputs({"model": encode}, self.texts, batch_size, self.repeats,
                                    description=f"latency: batch {batch_size}")
            metrics[f"sentences_per_second@{batch_size}"] = best["model"]
        latencies = single_query_latencies_ms(encode, self.texts[:self.single_queries])
        metrics.update({"p50_ms@1": percentile(latencies, 50), "p95_ms@1": percentile(latencies, 95),
                        "mean_ms@1": statistics.fmean(latencies)})
        metrics.update(environment(encoder))
        metrics["num_texts"] = len(self.texts)
        return {f"{self.name}/{key}": value for key, value in metrics.items()}

    def compare(self, encoder: TextEncoder, reference: EncodeFunction, reference_name: str,
                batch_size: int = 32) -> dict[str, float]:
        """Throughput of the model against another encoder of the same texts at one batch size, with their ratio
        (above 1: the model is faster)."""
        best = best_throughputs({"model": _encode_function(encoder), reference_name: reference}, self.texts,
                                batch_size, self.repeats, description=f"latency: against {reference_name}")
        return {f"{self.name}/{reference_name}_sentences_per_second@{batch_size}": best[reference_name],
                f"{self.name}/throughput_ratio_vs_{reference_name}@{batch_size}": best["model"] / best[reference_name]}


def environment(encoder: TextEncoder) -> dict[str, int | str]:
    """What a timing depends on: CPU threads, the weights' dtype and device, and the torch version."""
    parameter = next(encoder.parameters(), None) if isinstance(encoder, torch.nn.Module) else None
    return {"threads": torch.get_num_threads(),
            "dtype": str(parameter.dtype).removeprefix("torch.") if parameter is not None else "unknown",
            "device": str(parameter.device) if parameter is not None else "unknown",
            "torch_version": torch.__version__}


def _encode_function(encoder: TextEncoder) -> EncodeFunction:
    return lambda texts, batch_size: encoder.encode(texts, batch_size=batch_size)
