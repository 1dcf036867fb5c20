import json
import math

import pytest
import torch
from cli import ROOT

from embedlab.errors import ConfigError
from embedlab.modeling.search import top_k_cosine
from embedlab.recipes.mining import MiningFilters, mine_hard_negatives


def unit(angle_degrees: float) -> list[float]:
    radians = math.radians(angle_degrees)
    return [math.cos(radians), math.sin(radians)]


class FixedEncoder:
    """Texts embedded at fixed angles, so every cosine (and so every rank) is known by hand."""

    def __init__(self, angles: dict[str, float]):
        self.angles = angles

    def encode(self, texts, batch_size=32, show_progress_bar=False):
        return torch.tensor([unit(self.angles[text]) for text in texts])


class FixedCrossEncoder:
    def __init__(self, scores: dict[tuple[str, str], float]):
        self.scores = scores

    def predict(self, pairs, batch_size=32, show_progress_bar=False):
        return torch.tensor([self.scores.get(pair, 0.0) for pair in pairs])


# The anchor is at 0 degrees and its positive at 20 (cosine 0.940). Candidates, nearest first:
# "paraphrase" at 10 (0.985, a false negative scoring above the positive), "close" at 25 (0.906),
# "medium" at 35 (0.819), "hard" at 45 (0.707), "far" at 80 (0.174).
ANGLES = {"query": 0, "answer": 20, "paraphrase": 10, "close": 25, "medium": 35, "hard": 45, "far": 80,
          "other query": 180, "other answer": 170}
ROWS = [{"anchor": "query", "positive": "answer"}, {"anchor": "other query", "positive": "other answer"}]
CORPUS = ["paraphrase", "close", "medium", "hard", "far"]


def mine(filters, cross_encoder=None):
    return mine_hard_negatives(FixedEncoder(ANGLES), ROWS, filters, corpus=CORPUS, cross_encoder=cross_encoder)


def test_margin_drops_candidates_scoring_near_or_above_the_positive():
    mined = mine(MiningFilters(num_negatives=2, min_rank=0, max_rank=10, margin=0.1))
    # cos(query, answer) = 0.940: "paraphrase" (0.985) and "close" (0.906) are within 0.1 of it.
    assert mined[0] == {"anchor": "query", "positive": "answer", "negative_1": "medium", "negative_2": "hard"}


def test_rank_range_skips_the_top_and_stops_at_max_rank():
    mined = mine(MiningFilters(num_negatives=2, min_rank=1, max_rank=3, margin=-1.0))
    # Ranked candidates for "query": paraphrase, close, medium, hard, ...; ranks 1 and 2 are close and medium.
    assert [mined[0]["negative_1"], mined[0]["negative_2"]] == ["close", "medium"]


def test_rows_without_enough_negatives_are_left_out():
    # For "query" the two best candidates (paraphrase, close) both fail the margin; "other query" is far from all.
    mined = mine(MiningFilters(num_negatives=2, min_rank=0, max_rank=2, margin=0.1))
    assert [row["anchor"] for row in mined] == ["other query"]
    mined = mine(MiningFilters(num_negatives=1, min_rank=0, max_rank=10, margin=0.0))
    assert [row["anchor"] for row in mined] == ["query", "other query"]
    assert [mined[0]["negative_1"], mined[1]["negative_1"]] == ["close", "far"]


def test_other_rows_positives_are_candidates_but_never_a_rows_own_positive():
    mined = mine(MiningFilters(num_negatives=5, min_rank=0, max_rank=10, margin=-2.0))
    negatives = [[row[f"negative_{i}"] for i in range(1, 6)] for row in mined]
    assert negatives[0] == ["paraphrase", "close", "medium", "hard", "far"]
    assert negatives[1] == ["far", "hard", "medium", "close", "answer"]


def test_positives_of_the_same_anchor_in_other_rows_are_never_its_negatives():
    # NLI repeats a premise with another entailed hypothesis: "paraphrase" is then a positive of "query" too.
    rows = [*ROWS, {"anchor": "query", "positive": "paraphrase"}]
    mined = mine_hard_negatives(FixedEncoder(ANGLES), rows, MiningFilters(num_negatives=4, min_rank=0, max_rank=10,
                                margin=-2.0), corpus=CORPUS)
    by_positive = {row["positive"]: [row[f"negative_{i}"] for i in range(1, 5)] for row in mined}
    assert by_positive["answer"] == ["close", "medium", "hard", "far"]
    assert by_positive["paraphrase"] == ["close", "medium", "hard", "far"]
    assert by_positive["other answer"] == ["far", "hard", "medium", "close"]


def test_cross_encoder_threshold_drops_likely_positives():
    judge = FixedCrossEncoder({("query", "close"): 0.9, ("query", "medium"): 0.2, ("query", "hard"): 0.1})
    mined = mine(MiningFilters(num_negatives=2, min_rank=0, max_rank=10, margin=0.0, max_cross_encoder_score=0.5),
                 cross_encoder=judge)
    assert [mined[0]["negative_1"], mined[0]["negative_2"]] == ["medium", "hard"]


def test_invalid_filters_are_refused():
    with pytest.raises(ConfigError, match="min_rank"):
        mine(MiningFilters(min_rank=5, max_rank=5))
    with pytest.raises(ConfigError, match="cross-encoder"):
        mine(MiningFilters(max_cross_encoder_score=0.5))


def test_blockwise_top_k_equals_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    queries, corpus = torch.randn(7, 5, generator=generator), torch.randn(40, 5, generator=generator)
    scores, indices = top_k_cosine(queries, corpus, k=6, block_size=3)
    full = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(corpus, dim=-1).T
    expected_scores, expected_indices = full.sort(dim=1, descending=True)
    torch.testing.assert_close(scores, expected_scores[:, :6])
    assert torch.equal(indices, expected_indices[:, :6])


@pytest.mark.slow
def test_mining_script_writes_rows_that_mnr_training_reads(tmp_path, tiny_data_dir, tiny_model_dir):
    import subprocess
    import sys

    output = tmp_path / "mined.jsonl"
    command = [sys.executable, "scripts/mine_hard_negatives.py", f"model_path={tiny_model_dir}",
               f"paths.data_dir={tiny_data_dir}", f"output={output}", f"hydra.run.dir={tmp_path / 'mine'}",
               "filters.min_rank=0", "filters.margin=-1", "filters.num_negatives=3"]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 72 and set(rows[0]) == {"anchor", "positive", "negative_1", "negative_2", "negative_3"}
    assert all(row["positive"] not in (row["negative_1"], row["negative_2"], row["negative_3"]) for row in rows)

    from cli import run_train

    run_dir = tmp_path / "train"
    trained = run_train("experiment=nli_mnr_mined", f"mined_path={output}",
                        "+data.source.local.columns.negative_2=negative_2",
                        "+data.source.local.columns.negative_3=negative_3", run_dir=run_dir,
                        data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "test/stsb/spearman_cosine" in json.loads((run_dir / "results.json").read_text())
