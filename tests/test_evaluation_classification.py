"""Pair classification: thresholds against brute force, metrics against scikit-learn, the evaluator by hand, a
cross-encoder's predictions, and the RQE and table loaders."""

import itertools

import pytest
import torch
from fakes import LookupEncoder
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from embedlab.errors import ConfigError
from embedlab.evaluation.classification import (
    PairClassificationEvaluator,
    average_precision,
    best_threshold,
    classification_metrics,
)
from embedlab.evaluation.cross_encoder import CrossEncoderScorer
from embedlab.evaluation.datasets import LabelledPairs
from embedlab.evaluation.loaders import load_labelled_pairs, load_rqe

metrics = pytest.importorskip("sklearn.metrics")

SCORES = torch.tensor([0.9, 0.8, 0.8, 0.7, 0.5, 0.4, 0.4, 0.2, 0.1, -0.3])
LABELS = torch.tensor([1, 1, 0, 1, 0, 1, 0, 0, 1, 0])

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("objective", ["accuracy", "f1"])
def test_best_threshold_beats_every_other_threshold(objective):
    score = {"accuracy": metrics.accuracy_score, "f1": lambda y, p: metrics.f1_score(y, p, zero_division=0)}[objective]
    threshold, best = best_threshold(SCORES, LABELS, objective)
    assert score(LABELS.numpy(), (SCORES > threshold).numpy()) == pytest.approx(best)
    # Every threshold that makes a different cut: below, between and above the distinct scores.
    distinct = sorted(set(SCORES.tolist()))
    candidates = [distinct[0] - 1] + [(a + b) / 2 for a, b in itertools.pairwise(distinct)] + [distinct[-1] + 1]
    assert best == pytest.approx(max(score(LABELS.numpy(), (SCORES > t).numpy()) for t in candidates))


def test_threshold_never_splits_tied_scores():
    scores, labels = torch.tensor([0.5, 0.5, 0.5, 0.1]), torch.tensor([1, 1, 0, 0])
    threshold, accuracy = best_threshold(scores, labels, "accuracy")
    assert 0.1 < threshold < 0.5 and accuracy == 0.75
    assert best_threshold(torch.tensor([0.3, 0.2]), torch.tensor([0, 0]), "accuracy") == pytest.approx((1.3, 1.0))


def test_metrics_against_scikit_learn():
    predictions = (SCORES > 0.45).long()
    ours = classification_metrics(predictions, LABELS)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(LABELS, predictions))
    assert ours["f1"] == pytest.approx(metrics.f1_score(LABELS, predictions))
    assert ours["precision"] == pytest.approx(metrics.precision_score(LABELS, predictions))
    assert ours["recall"] == pytest.approx(metrics.recall_score(LABELS, predictions))
    assert average_precision(SCORES, LABELS) == pytest.approx(metrics.average_precision_score(LABELS, SCORES))


def test_evaluator_applies_train_thresholds_to_test():
    # Cosines with "anchor" [1, 0]: the text's name gives it.
    angles = {"c90": [0.9, 0.43589], "c70": [0.7, 0.71414], "c50": [0.5, 0.86603], "c30": [0.3, 0.95394],
              "c10": [0.1, 0.99499], "c60": [0.6, 0.8], "c20": [0.2, 0.9798]}
    encoder = LookupEncoder({"anchor": [1.0, 0.0], **angles})
    # Train: positives at .9 .7 .5, negatives at .3 .1 -> both thresholds fall between .5 and .3, at .4.
    train = LabelledPairs(["anchor"] * 5, ["c90", "c70", "c50", "c30", "c10"], [1, 1, 1, 0, 0])
    # Test: .6 and .2 predicted right, .5 (a negative) predicted positive, .3 (a positive) predicted negative.
    test = LabelledPairs(["anchor"] * 4, ["c60", "c20", "c50", "c30"], [1, 0, 0, 1])
    evaluator = PairClassificationEvaluator("hand", train, test, batch_size=2)
    results = evaluator(encoder)
    assert results["hand/accuracy_threshold"] == pytest.approx(0.4, abs=1e-4)
    assert results["hand/f1_threshold"] == pytest.approx(0.4, abs=1e-4)
    assert results["hand/accuracy"] == 0.5
    assert results["hand/precision"] == 0.5 and results["hand/recall"] == 0.5 and results["hand/f1"] == 0.5
    # Ranked .6+ .5- .3+ .2-: AP = (1/1 + 2/3) / 2.
    assert results["hand/average_precision"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-4)
    assert evaluator.pair_similarities["positive"] == pytest.approx([0.6, 0.3], abs=1e-4)
    assert evaluator.pair_similarities["negative"] == pytest.approx([0.2, 0.5], abs=1e-4)


@pytest.fixture(scope="module")
def nli_cross_encoder_dir(tiny_model_dir, tmp_path_factory) -> str:
    """A tiny random three-way NLI cross-encoder (labels named as NLI models name them)."""
    torch.manual_seed(1)
    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=3,
                                        id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
                                        label2id={"contradiction": 0, "entailment": 1, "neutral": 2})
    folder = tmp_path_factory.mktemp("cross_encoder")
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return str(folder)


def test_cross_encoder_predictions_and_metrics(nli_cross_encoder_dir, tiny_model_dir):
    first = ["a man plays the guitar", "a dog runs", "the cat sleeps", "two children play"]
    second = ["a man plays music", "a cat sleeps", "a cat is sleeping", "people walk"]
    scorer = CrossEncoderScorer(nli_cross_encoder_dir, positive_label="entailment", batch_size=3)
    probabilities, predictions = scorer.predict(first, second)
    # The same forward pass by hand, one pair at a time.
    model = BertForSequenceClassification.from_pretrained(nli_cross_encoder_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(nli_cross_encoder_dir)
    with torch.no_grad():
        logits = torch.cat([model(**tokenizer(a, b, return_tensors="pt")).logits for a, b in zip(first, second)])
    assert torch.allclose(probabilities, logits.softmax(-1)[:, 1], atol=1e-5)
    assert predictions.tolist() == (logits.argmax(-1) == 1).long().tolist()

    pairs = LabelledPairs(first, second, [1, 0, 1, 0])
    encoder = LookupEncoder({text: [float(len(text)), 1.0] for text in first + second})
    results = PairClassificationEvaluator("ce", pairs, pairs, cross_encoder_path=nli_cross_encoder_dir,
                                          cross_encoder_positive_label="entailment")(encoder)
    assert results["ce/cross_encoder_accuracy"] == pytest.approx(metrics.accuracy_score([1, 0, 1, 0], predictions))
    assert results["ce/cross_encoder_f1"] == pytest.approx(
        metrics.f1_score([1, 0, 1, 0], predictions, zero_division=0))
    assert results["ce/cross_encoder_average_precision"] == pytest.approx(
        metrics.average_precision_score([1, 0, 1, 0], probabilities))
    with pytest.raises(ConfigError, match="no label 'duplicate'"):
        CrossEncoderScorer(nli_cross_encoder_dir, positive_label="duplicate")


def test_single_logit_cross_encoder_uses_the_sigmoid(tiny_model_dir, tmp_path):
    torch.manual_seed(2)
    BertForSequenceClassification(BertConfig.from_pretrained(tiny_model_dir, num_labels=1)).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    probabilities, predictions = CrossEncoderScorer(str(tmp_path)).predict(["a dog runs"], ["a dog walks"])
    assert 0 < probabilities.item() < 1
    assert predictions.item() == int(probabilities.item() > 0.5)


def test_rqe_xml_and_labelled_tables(tmp_path):
    xml = tmp_path / "rqe.xml"
    xml.write_text('<?xml version="1.0"?><RQE><pair pid="1" value="true"><chq>\n  Flu. How long\n</chq>'
                   '<faq> How long does flu last? </faq></pair>'
                   '<pair pid="2" value="false"><chq>Gout diet</chq><faq>What is asthma?</faq></pair>'
                   '<pair pid="3" value="true"><chq>No answer to this one</chq><faq>\n  </faq></pair></RQE>')
    assert load_rqe(str(xml)) == LabelledPairs(["Flu. How long", "Gout diet"],
                                               ["How long does flu last?", "What is asthma?"], [1, 0])
    table = tmp_path / "SICK.txt"
    table.write_text("pair_ID\tsentence_A\tsentence_B\tentailment_judgment\n1\tA b.\tC d.\tENTAILMENT\n"
                     "2\tE f.\tG h.\tNEUTRAL\n3\tI j.\tK l.\tCONTRADICTION\n")
    pairs = load_labelled_pairs({"path": str(table), "columns": {"sentence1": "sentence_A", "sentence2": "sentence_B",
                                                                 "label": "entailment_judgment"}}, ["ENTAILMENT"])
    assert pairs.labels == [1, 0, 0] and pairs.sentence2 == ["C d.", "G h.", "K l."]
