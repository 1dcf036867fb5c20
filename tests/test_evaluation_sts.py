"""STS evaluation: similarities and correlations by hand, and the whole evaluator against sentence-transformers."""

import math

import pytest
import torch
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

from embedlab.errors import DataError
from embedlab.evaluation.datasets import ScoredPairs
from embedlab.evaluation.loaders import load_biosses, load_scored_pairs
from embedlab.evaluation.sts import STSEvaluator, correlations, pairwise_similarities
from embedlab.modeling.encoder import SentenceEncoder

PAIRS = ScoredPairs(
    ["a man plays the guitar", "a dog runs in the park", "a cat sleeps in the house", "two children play",
     "a bird sits in the tree", "the woman eats food outside"],
    ["a man plays music", "the dog walks in a field", "a cat is sleeping", "people walk on the street",
     "a girl sings a song", "a woman eats outside"],
    [4.8, 3.1, 4.0, 1.2, 0.4, 4.4],
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pairwise_similarities_by_hand():
    first = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    second = torch.tensor([[1.0, 1.0], [0.0, 4.0]])
    similarities = pairwise_similarities(first, second)
    assert similarities["cosine"].tolist() == pytest.approx([1 / math.sqrt(2), 16 / 20])
    assert similarities["dot"].tolist() == pytest.approx([1.0, 16.0])
    assert similarities["euclidean"].tolist() == pytest.approx([-1.0, -3.0])
    assert similarities["manhattan"].tolist() == pytest.approx([-1.0, -3.0])
    assert pairwise_similarities(torch.tensor([[1.0, 2.0]]), torch.tensor([[4.0, 0.0]]))["manhattan"].item() == -5.0


def test_correlations_by_hand_and_against_torchmetrics():
    predicted = torch.tensor([0.1, 0.4, 0.35, 0.8])
    gold = [1.0, 2.0, 3.0, 4.0]
    metrics = correlations({"cosine": predicted}, gold)
    # Ranks 1, 3, 2, 4 against 1, 2, 3, 4: rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8.
    assert metrics["spearman_cosine"] == pytest.approx(0.8)
    # Pearson by hand: deviations of x (mean 0.4125) and y (mean 2.5).
    dx = [value - 0.4125 for value in predicted.tolist()]
    dy = [-1.5, -0.5, 0.5, 1.5]
    expected = sum(a * b for a, b in zip(dx, dy)) / math.sqrt(sum(a * a for a in dx) * sum(b * b for b in dy))
    assert metrics["pearson_cosine"] == pytest.approx(expected)
    assert metrics["pearson_cosine"] == pytest.approx(float(pearson_corrcoef(predicted, torch.tensor(gold))), abs=1e-6)
    assert metrics["spearman_cosine"] == pytest.approx(float(spearman_corrcoef(predicted, torch.tensor(gold))),
                                                       abs=1e-6)


def test_sts_evaluator_matches_sentence_transformers(tiny_model_dir, tmp_path):
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    from sentence_transformers import SentenceTransformer

    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    ours = STSEvaluator("tiny-sts", PAIRS, batch_size=4)(encoder)
    encoder.save(tmp_path / "model")
    reference = evaluation.EmbeddingSimilarityEvaluator(
        PAIRS.sentence1, PAIRS.sentence2, PAIRS.scores, batch_size=4, write_csv=False,
        similarity_fn_names=["cosine", "dot", "euclidean", "manhattan"])(SentenceTransformer(str(tmp_path / "model")))
    assert len(ours) == 8
    for measure in ("cosine", "dot", "euclidean", "manhattan"):
        for statistic in ("spearman", "pearson"):
            key = f"{statistic}_{measure}"
            assert ours[f"tiny-sts/{key}"] == pytest.approx(reference[key], abs=1e-5), key


def test_biosses_plain_text_pairs(tmp_path):
    sentences = tmp_path / "pairs.txt"
    sentences.write_text("First one.\nFirst two.\nSecond one.\nSecond two.")
    scores = tmp_path / "scores.txt"
    scores.write_text("3.2\n0.4\n")
    pairs = load_biosses(str(sentences), str(scores))
    assert pairs == ScoredPairs(["First one.", "Second one."], ["First two.", "Second two."], [3.2, 0.4])
    scores.write_text("3.2\n")
    with pytest.raises(DataError, match="two sentences per score"):
        load_biosses(str(sentences), str(scores))


def test_scored_pairs_from_a_local_table_and_a_missing_one(tmp_path):
    table = tmp_path / "sts.tsv"
    table.write_text("s1\ts2\tscore\nA cat.\tA dog.\t2.5\nA man.\tA person.\t5\n")
    source = {"local": {"path": str(table), "columns": {"sentence1": "s1", "sentence2": "s2", "score": "score"},
                        "score_range": [0, 5]}}
    assert load_scored_pairs(source) == ScoredPairs(["A cat.", "A man."], ["A dog.", "A person."], [0.5, 1.0])
    source["local"]["path"] = str(tmp_path / "absent.tsv")
    with pytest.raises(DataError, match="absent.tsv"):
        load_scored_pairs(source)
