import json
import math

import pytest
import torch
from cli import ROOT

from embedlab.errors import ConfigError
from embedlab.modeling.search import top_k_cosine
from embedlab.recipes.mining import MiningSettings, mine_hard_negatives


def unit(angle_degrees: float) -> list[float]:
    radians = math.radians(angle_degrees)
    return [math.cos(radians), math.sin(radians)]


class FixedEncoder:
    """Texts embedded at fixed angles, so every cosine (and so every rank) is known by hand."""

    def __init__(self, angles: dict[str, float]):
        self.angles = angles

    def encode(self, texts, batch_size=32, show_progress_bar=False, prompt_name=None):
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


def mine(settings, cross_encoder=None, rows=ROWS):
    return mine_hard_negatives(FixedEncoder(ANGLES), rows, settings, corpus=CORPUS, cross_encoder=cross_encoder)


def negatives(row: dict) -> list[str]:
    return [row[key] for key in sorted(key for key in row if key.startswith("negative_"))]


def test_absolute_margin_drops_candidates_scoring_near_or_above_the_positive():
    mined = mine(MiningSettings(num_negatives=2, absolute_margin=0.1))
    # cos(query, answer) = 0.940: "paraphrase" (0.985) and "close" (0.906) are within 0.1 of it.
    assert negatives(mined[0]) == ["medium", "hard"]
    assert mined[0]["scores"] == pytest.approx([0.9397, 0.8192, 0.7071], abs=1e-4)


def test_relative_margin_keeps_negatives_below_a_share_of_the_positive():
    # 95% of 0.940 is 0.893: "close" (0.906) is too near, "medium" (0.819) is not.
    assert negatives(mine(MiningSettings(num_negatives=1, relative_margin=0.05))[0]) == ["medium"]
    assert negatives(mine(MiningSettings(num_negatives=1, relative_margin=0.01))[0]) == ["close"]


def test_rank_range_counts_the_candidates_the_filters_left():
    mined = mine(MiningSettings(num_negatives=2, range_min=1, range_max=3))
    # Candidates of "query" with its positive left out: paraphrase, close, medium, ...; ranks 1 and 2.
    assert negatives(mined[0]) == ["close", "medium"]
    with_margin = mine(MiningSettings(num_negatives=1, range_min=1, range_max=3, absolute_margin=0.0))
    # The margin removes "paraphrase" first; rank 1 of what is left is "medium".
    assert negatives(with_margin[0]) == ["medium"]


def test_rows_without_enough_negatives_are_left_out():
    # For "query" the two best candidates (paraphrase, close) both fail the margin; "other query" is far from all.
    mined = mine(MiningSettings(num_negatives=2, range_max=2, absolute_margin=0.1))
    assert [row["anchor"] for row in mined] == ["other query"]


def test_other_rows_positives_are_candidates_but_never_a_rows_own_positive():
    mined = mine(MiningSettings(num_negatives=5, range_max=10))
    assert negatives(mined[0]) == ["paraphrase", "close", "medium", "hard", "far"]
    assert negatives(mined[1]) == ["far", "hard", "medium", "close", "answer"]


def test_positives_of_the_same_anchor_in_other_rows_are_never_its_negatives():
    # NLI repeats a premise with another entailed hypothesis: "paraphrase" is then a positive of "query" too.
    mined = mine(MiningSettings(num_negatives=4, range_max=10), rows=[*ROWS, {"anchor": "query", "positive": "paraphrase"}])
    by_positive = {row["positive"]: negatives(row) for row in mined}
    assert by_positive["answer"] == by_positive["paraphrase"] == ["close", "medium", "hard", "far"]
    assert by_positive["other answer"] == ["far", "hard", "medium", "close"]
    # The anchor's one mining serves both its rows, with each row's own positive score first.
    scores = {row["positive"]: row["scores"][0] for row in mined}
    assert scores["paraphrase"] == pytest.approx(math.cos(math.radians(10)))


def test_random_sampling_draws_from_the_kept_ranks_best_first_and_repeats_with_the_seed():
    settings = MiningSettings(num_negatives=2, range_max=5, sampling="random", seed=3)
    first = [negatives(row) for row in mine(settings)]
    assert first == [negatives(row) for row in mine(settings)]
    ranked = ["paraphrase", "close", "medium", "hard", "far"]
    assert set(first[0]) <= set(ranked) and first[0] == sorted(first[0], key=ranked.index)
    draws = {tuple(negatives(mine(MiningSettings(num_negatives=2, range_max=5, sampling="random", seed=seed))[0]))
             for seed in range(20)}
    assert len(draws) > 1


def test_cross_encoder_scores_replace_the_bi_encoders_in_the_filters():
    judge = FixedCrossEncoder({("query", "answer"): 0.8, ("query", "paraphrase"): 0.95, ("query", "close"): 0.9,
                               ("query", "medium"): 0.2, ("query", "hard"): 0.1})
    mined = mine(MiningSettings(num_negatives=2, max_score=0.5), cross_encoder=judge)
    assert negatives(mined[0]) == ["medium", "hard"]
    assert mined[0]["scores"] == pytest.approx([0.8, 0.2, 0.1])


def test_faiss_search_mines_what_torch_search_mines():
    pytest.importorskip("faiss")
    settings = {"num_negatives": 3, "relative_margin": 0.01}
    assert mine(MiningSettings(**settings, use_faiss=True)) == pytest.approx(mine(MiningSettings(**settings)))


def test_invalid_settings_are_refused():
    with pytest.raises(ConfigError, match="ranks"):
        mine(MiningSettings(num_negatives=2, range_min=5, range_max=6))
    with pytest.raises(ConfigError, match="sampling"):
        MiningSettings(sampling="best")


@pytest.mark.parametrize("settings", [
    {"num_negatives": 2},
    {"num_negatives": 2, "range_min": 2, "range_max": 8},
    {"num_negatives": 3, "relative_margin": 0.05},
    {"num_negatives": 1, "absolute_margin": 0.02, "max_score": 0.99},
])
def test_mining_equals_sentence_transformers(settings, tiny_model_dir, tmp_path, one_thread):
    datasets = pytest.importorskip("datasets")
    from conftest import SENTENCES
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as reference_mining

    from embedlab.modeling.encoder import SentenceEncoder

    rng = __import__("random").Random(0)
    queries = [f"{text} today" for text in SENTENCES[:8]]
    # Each query's positive is the sentence it was made from, so that margins below it drop some candidates only.
    rows = [{"anchor": query, "positive": SENTENCES[i]} for i, query in enumerate(queries)]
    rows.append({"anchor": queries[0], "positive": SENTENCES[11]})  # a query with two positives
    corpus = [f"{rng.choice(SENTENCES)} and {rng.choice(SENTENCES)}" for _ in range(30)]
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    encoder.save(tmp_path / "model")
    ours = mine_hard_negatives(SentenceEncoder.load(tmp_path / "model"), rows, MiningSettings(**settings),
                               corpus=corpus)
    theirs = reference_mining(datasets.Dataset.from_list(rows), SentenceTransformer(str(tmp_path / "model")),
                              corpus=corpus, output_format="n-tuple", output_scores=True, verbose=False,
                              **{key.replace("sampling", "sampling_strategy"): value for key, value in settings.items()})
    assert len(ours) == len(theirs) > 0
    for mine_row, their_row in zip(ours, theirs.to_list()):
        assert {key: value for key, value in mine_row.items() if key != "scores"} == \
            {key: value for key, value in their_row.items() if key != "scores"}
        assert mine_row["scores"] == pytest.approx(their_row["scores"], abs=1e-5)


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
               "mining.range_min=0", "mining.absolute_margin=null", "mining.num_negatives=3"]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 72
    assert set(rows[0]) == {"anchor", "positive", "negative_1", "negative_2", "negative_3", "scores"}
    assert all(row["positive"] not in (row["negative_1"], row["negative_2"], row["negative_3"]) for row in rows)

    from cli import run_train

    run_dir = tmp_path / "train"
    trained = run_train("experiment=nli_mnr_mined", f"mined_path={output}",
                        "+data.source.local.columns.negative_2=negative_2",
                        "+data.source.local.columns.negative_3=negative_3", run_dir=run_dir,
                        data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "test/stsb/spearman_cosine" in json.loads((run_dir / "results.json").read_text())
