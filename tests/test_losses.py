"""Each embedlab loss against sentence-transformers' own implementation: same value, same gradients."""

import warnings

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from sentence_transformers.sentence_transformer import losses as st_losses
from torch import nn

from embedlab import losses
from embedlab.config import CONF_DIR
from embedlab.errors import ConfigError, DataError
from embedlab.losses import Signature, choose_format

BATCH, DIM = 6, 8
TOL = {"rtol": 1e-5, "atol": 1e-6}


class Precomputed(nn.Module):
    """Stands in for a SentenceTransformer: each feature dict already carries its embedding."""

    device = torch.device("cpu")

    def forward(self, features):
        return {"sentence_embedding": features["precomputed"]}


def make_embeddings(columns: int, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(BATCH, DIM, requires_grad=True) for _ in range(columns)]


def clones(embeddings):
    return [e.detach().clone().requires_grad_(True) for e in embeddings]


def assert_same_loss_and_grads(ours_fn, theirs_fn, embeddings):
    """Run both losses on copies of the same embeddings; compare the value and every embedding's gradient."""
    mine, reference = clones(embeddings), clones(embeddings)
    ours, theirs = ours_fn(mine), theirs_fn(reference)
    torch.testing.assert_close(ours, theirs, **TOL)
    ours.backward()
    theirs.backward()
    for a, b in zip(mine, reference):
        assert a.grad is not None and a.grad.abs().sum() > 0
        torch.testing.assert_close(a.grad, b.grad, **TOL)
    return ours


@pytest.mark.parametrize("columns", [2, 3, 4], ids=["pairs", "one_negative", "two_negatives"])
def test_mnr_matches_sentence_transformers(columns):
    embeddings = make_embeddings(columns)
    ours = losses.MultipleNegativesRankingLoss(scale=20.0)
    theirs = st_losses.MultipleNegativesRankingLoss(Precomputed(), scale=20.0)
    assert_same_loss_and_grads(lambda e: ours(e), lambda e: theirs.compute_loss_from_embeddings(e, None), embeddings)


def symmetric_class_reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the class is deprecated in favour of the per_direction spelling
        return st_losses.MultipleNegativesSymmetricRankingLoss(Precomputed(), scale=20.0)


def mnr_pair(directions, partition):
    ours = losses.MultipleNegativesRankingLoss(scale=20.0, directions=directions, partition=partition)
    theirs = st_losses.MultipleNegativesRankingLoss(Precomputed(), scale=20.0, directions=directions,
                                                    partition_mode=partition)
    return ours, theirs


@pytest.mark.parametrize("directions,partition", [
    (("query_to_doc", "doc_to_query"), "per_direction"),
    (("query_to_doc", "doc_to_query"), "joint"),
    (("query_to_doc", "query_to_query"), "joint"),
    (("query_to_doc", "doc_to_doc"), "joint"),
    (("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"), "joint"),
], ids=["symmetric", "symmetric_joint", "query_to_query", "doc_to_doc", "all_four"])
@pytest.mark.parametrize("columns", [2, 3, 4])
def test_mnr_directions_match_sentence_transformers(columns, directions, partition):
    embeddings = make_embeddings(columns, seed=1)
    ours, theirs = mnr_pair(directions, partition)
    value = assert_same_loss_and_grads(lambda e: ours(e), lambda e: theirs.compute_loss_from_embeddings(e, None),
                                       embeddings)
    # The extra directions really change the loss on these embeddings.
    one_way = losses.MultipleNegativesRankingLoss(scale=20.0)(clones(embeddings))
    assert not torch.isclose(value, one_way)


@pytest.mark.parametrize("columns", [2, 3])
def test_mnr_symmetric_config_is_sentence_transformers_symmetric_loss(columns):
    embeddings = make_embeddings(columns, seed=1)
    config = OmegaConf.load(CONF_DIR / "loss" / "mnr_symmetric.yaml")
    ours = hydra.utils.instantiate(config)
    theirs = symmetric_class_reference()
    assert_same_loss_and_grads(lambda e: ours(e), lambda e: theirs.compute_loss_from_embeddings(e, None), embeddings)


@pytest.mark.parametrize("directions,partition", [(("doc_to_query",), "joint"), (("query_to_doc", "sideways"), "joint"),
                                                  (("query_to_doc",), "shared"),
                                                  (("query_to_doc", "query_to_query"), "per_direction")])
def test_mnr_rejects_unknown_directions_and_partitions(directions, partition):
    with pytest.raises(ConfigError, match="loss.directions|loss.partition"):
        losses.MultipleNegativesRankingLoss(directions=directions, partition=partition)


def test_softmax_loss_matches_sentence_transformers():
    embeddings = make_embeddings(2, seed=2)
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    ours = losses.SoftmaxLoss(embedding_dim=DIM, num_labels=3)
    theirs = st_losses.SoftmaxLoss(Precomputed(), embedding_dimension=DIM, num_labels=3)
    theirs.classifier.load_state_dict(ours.classifier.state_dict())
    assert_same_loss_and_grads(
        lambda e: ours(e, labels),
        lambda e: theirs([{"precomputed": x} for x in e], labels),
        embeddings,
    )
    # The classifier's gradients match too, since both sides train it.
    for a, b in zip(ours.classifier.parameters(), theirs.classifier.parameters()):
        torch.testing.assert_close(a.grad, b.grad, **TOL)


def test_cosine_similarity_loss_matches_sentence_transformers():
    embeddings = make_embeddings(2, seed=3)
    scores = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0, 0.4])
    theirs = st_losses.CosineSimilarityLoss(Precomputed())
    assert_same_loss_and_grads(lambda e: losses.CosineSimilarityLoss()(e, scores),
                               lambda e: theirs.compute_loss_from_embeddings(e, scores), embeddings)


@pytest.mark.parametrize("scores", [[0.1, 0.5, 0.3, 0.9, 0.0, 0.7], [1.0, 1.0, 0.0, 2.0, 0.0, 2.0]],
                         ids=["distinct", "ties"])
@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_cosent_matches_sentence_transformers(scores, scale):
    embeddings = make_embeddings(2, seed=4)
    scores = torch.tensor(scores)
    theirs = st_losses.CoSENTLoss(Precomputed(), scale=scale)
    assert_same_loss_and_grads(lambda e: losses.CoSENTLoss(scale=scale)(e, scores),
                               lambda e: theirs.compute_loss_from_embeddings(e, scores), embeddings)


@pytest.mark.parametrize("margin", [0.5, 1.2])
def test_contrastive_matches_sentence_transformers(margin):
    embeddings = make_embeddings(2, seed=5)
    labels = torch.tensor([1, 0, 1, 0, 0, 1])
    theirs = st_losses.ContrastiveLoss(Precomputed(), margin=margin)
    assert_same_loss_and_grads(lambda e: losses.ContrastiveLoss(margin=margin)(e, labels),
                               lambda e: theirs.compute_loss_from_embeddings(e, labels), embeddings)


@pytest.mark.parametrize("labels", [[1, 0, 2, 1, 0, 1], [1.0, 0.5, 0.0, 1.0, 0.0, 1.0]])
def test_contrastive_rejects_non_binary_labels(labels):
    with pytest.raises(DataError, match="binary"):
        losses.ContrastiveLoss()(make_embeddings(2), torch.tensor(labels))


@pytest.mark.parametrize("margin", [5.0, 1.0])
def test_triplet_matches_sentence_transformers(margin):
    embeddings = make_embeddings(3, seed=6)
    # Bring the negatives closer so that, at margin 1, some triplets are inside the margin and some are not.
    with torch.no_grad():
        embeddings[2].mul_(0.5)
    theirs = st_losses.TripletLoss(Precomputed(), triplet_margin=margin)
    assert_same_loss_and_grads(lambda e: losses.TripletLoss(margin=margin)(e),
                               lambda e: theirs.compute_loss_from_embeddings(e, None), embeddings)


@pytest.mark.parametrize("loss, described", [
    (losses.MultipleNegativesRankingLoss, "(anchor, positive, negative*)"),
    (losses.SoftmaxLoss, "(sentence1, sentence2, label)"),
    (losses.CosineSimilarityLoss, "(sentence1, sentence2, score)"),
    (losses.CoSENTLoss, "(sentence1, sentence2, score)"),
    (losses.ContrastiveLoss, "(sentence1, sentence2, label)"),
    (losses.TripletLoss, "(anchor, positive, negative)"),
])
def test_signature_describe(loss, described):
    assert isinstance(loss.signature, Signature)
    assert loss.signature.describe() == described


def test_text_columns_orders_hard_negatives():
    signature = losses.MultipleNegativesRankingLoss.signature
    columns = ("negative_2", "positive", "negative", "anchor", "negative_1")
    assert signature.text_columns(columns) == ["anchor", "positive", "negative", "negative_1", "negative_2"]
    assert signature.text_columns(("anchor", "positive")) == ["anchor", "positive"]


def test_text_columns_rejects_data_that_does_not_fit():
    mnr = losses.MultipleNegativesRankingLoss.signature
    assert mnr.text_columns(("anchor",)) is None
    assert mnr.text_columns(("anchor", "positive", "score")) is None
    assert mnr.text_columns(("anchor", "positive", "negatives")) is None
    # The target counts as a required column but not as a text column.
    assert losses.SoftmaxLoss.signature.text_columns(("sentence1", "sentence2", "label")) == ["sentence1", "sentence2"]


def test_choose_format_picks_the_format_that_fits():
    formats = {"pairs": ("anchor", "positive"), "scored": ("sentence1", "sentence2", "score")}
    assert choose_format("cosent", losses.CoSENTLoss.signature, "stsb", formats) == "scored"
    assert choose_format("mnr", losses.MultipleNegativesRankingLoss.signature, "stsb", formats) == "pairs"


def test_choose_format_error_names_loss_and_data():
    formats = {"columns": ("sentence1", "sentence2", "score")}
    with pytest.raises(ConfigError) as error:
        choose_format("softmax", losses.SoftmaxLoss.signature, "stsb", formats)
    message = str(error.value)
    assert "softmax" in message
    assert "(sentence1, sentence2, label)" in message
    assert "score" in message
    assert "stsb" in message
