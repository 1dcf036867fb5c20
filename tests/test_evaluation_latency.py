"""Latency and throughput: percentiles against numpy, timings against encoders of known speed, and the recorded
setting."""

import time

import numpy as np
import pytest
import torch

from embedlab.evaluation.datasets import ScoredPairs
from embedlab.evaluation.latency import (
    LatencyEvaluator,
    percentile,
    sample_texts,
    throughput,
)
from embedlab.modeling.encoder import SentenceEncoder


class SleepingEncoder:
    """Takes `seconds_per_text` for each text: an encoder of known speed."""

    def __init__(self, seconds_per_text: float):
        self.seconds_per_text = seconds_per_text

    def encode(self, texts, batch_size=32, show_progress_bar=False):
        time.sleep(self.seconds_per_text * len(texts))
        return torch.zeros(len(texts), 2)


@pytest.mark.parametrize("percent", [0, 50, 95, 100])
def test_percentile_matches_numpy(percent):
    values = [12.0, 3.5, 7.25, 9.0, 30.0, 4.0, 5.5]
    assert percentile(values, percent) == pytest.approx(np.percentile(values, percent))


def test_throughput_of_an_encoder_of_known_speed():
    # 20 texts at 5 ms each: at most 200 per second, and not far below it.
    rate = throughput(lambda texts, batch_size: SleepingEncoder(0.005).encode(texts), ["t"] * 20, batch_size=4)
    assert 120 < rate <= 200


def test_comparison_ratio_of_two_known_speeds():
    evaluator = LatencyEvaluator(["t"] * 10, repeats=2)
    slower = SleepingEncoder(0.004)
    results = evaluator.compare(SleepingEncoder(0.002), lambda texts, batch_size: slower.encode(texts), "slower",
                                batch_size=5)
    assert 150 < results["latency/slower_sentences_per_second@5"] <= 250
    assert 1.5 < results["latency/throughput_ratio_vs_slower@5"] < 2.5


def test_latency_evaluator_keys_and_setting(tiny_model_dir, one_thread):
    texts = sample_texts(ScoredPairs(["a dog runs", "a cat sleeps"], ["a dog walks", "a dog runs"], [1.0, 2.0]),
                         count=10)
    assert texts == ["a dog runs", "a cat sleeps", "a dog walks"]
    results = LatencyEvaluator(texts, batch_sizes=[1, 2], repeats=1, single_queries=3)(
        SentenceEncoder.from_pretrained(tiny_model_dir))
    assert set(results) == {"latency/sentences_per_second@1", "latency/sentences_per_second@2", "latency/p50_ms@1",
                            "latency/p95_ms@1", "latency/mean_ms@1", "latency/threads", "latency/dtype",
                            "latency/device", "latency/torch_version", "latency/num_texts"}
    assert 0 < results["latency/p50_ms@1"] <= results["latency/p95_ms@1"]
    assert results["latency/sentences_per_second@2"] > 0
    assert results["latency/threads"] == 1
    assert (results["latency/dtype"], results["latency/device"]) == ("float32", "cpu")
    assert results["latency/torch_version"] == torch.__version__
    assert results["latency/num_texts"] == 3
