"""Matryoshka: any embedding loss on nested prefixes of the embeddings, and encoding truncated to a prefix."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from sentence_transformers import SentenceTransformer

from embedlab.config import CONF_DIR
from embedlab.errors import ConfigError, user_error
from embedlab.losses import (
    CachedMultipleNegativesRankingLoss,
    CoSENTLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    configured_loss_class,
)
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.objectives.bi_encoder import BiEncoderModule

DIMS, WEIGHTS = [32, 16, 8], [1.0, 0.5, 0.25]


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["loss=matryoshka", *overrides])


def random_embeddings(columns: int, rows: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(rows, DIMS[0], generator=generator) for _ in range(columns)]


@pytest.mark.parametrize("inner,columns,labels", [
    (MultipleNegativesRankingLoss(), 3, None),
    (CoSENTLoss(), 2, torch.tensor([0.1, 0.9, 0.4, 0.7, 0.0, 1.0])),
])
def test_loss_is_the_weighted_sum_of_the_inner_loss_on_prefixes(inner, columns, labels):
    embeddings = random_embeddings(columns)
    expected = sum(weight * inner([e[:, :dim] for e in embeddings], labels) for dim, weight in zip(DIMS, WEIGHTS))
    torch.testing.assert_close(MatryoshkaLoss(inner, DIMS, WEIGHTS)(embeddings, labels), expected)
    # The prefixes matter: the full embeddings alone give another loss.
    assert not torch.isclose(expected, sum(WEIGHTS) * inner(embeddings, labels))


def test_weights_default_to_one():
    embeddings = random_embeddings(2)
    inner = MultipleNegativesRankingLoss()
    expected = sum(inner([e[:, :dim] for e in embeddings]) for dim in DIMS)
    torch.testing.assert_close(MatryoshkaLoss(inner, DIMS)(embeddings), expected)


@pytest.mark.parametrize("inner_option,inner_class", [("mnr", MultipleNegativesRankingLoss), ("cosent", CoSENTLoss),
                                                      ("cached_mnr", CachedMultipleNegativesRankingLoss)])
def test_the_wrapped_loss_declares_the_columns(inner_option, inner_class):
    cfg = config(f"loss@loss.inner={inner_option}")
    assert configured_loss_class(cfg.loss) is inner_class
    loss = instantiate(cfg.loss)
    assert (loss.signature, loss.consumes, loss.uses_in_batch_negatives) == (
        inner_class.signature, inner_class.consumes, inner_class.uses_in_batch_negatives)


@pytest.mark.parametrize("data,inner_option,columns", [
    ("nli", "mnr", ["anchor", "positive", "negative"]),
    ("stsb", "cosent", ["sentence1", "sentence2"]),
])
def test_the_start_up_column_check_sees_the_wrapped_loss(data, inner_option, columns):
    cfg = config(f"data={data}", f"loss@loss.inner={inner_option}")
    datamodule = instantiate(cfg.data, _convert_="all")
    assert datamodule.fit_loss("matryoshka", configured_loss_class(cfg.loss)) == columns


def test_a_wrapped_loss_that_does_not_fit_the_data_fails_naming_the_columns():
    cfg = config("data=stsb")
    datamodule = instantiate(cfg.data, _convert_="all")
    with pytest.raises(ConfigError, match=r"needs columns \(anchor, positive, negative\*\)"):
        datamodule.fit_loss("matryoshka", configured_loss_class(cfg.loss))


def test_a_loss_sized_by_the_embedding_cannot_be_wrapped():
    with pytest.raises(ConfigError, match="cannot wrap SoftmaxLoss"):
        configured_loss_class(config("loss@loss.inner=softmax").loss)


def test_a_cached_inner_loss_keeps_its_mini_batches():
    assert MatryoshkaLoss(CachedMultipleNegativesRankingLoss(mini_batch_size=4), DIMS).mini_batch_size == 4
    assert MatryoshkaLoss(MultipleNegativesRankingLoss(), DIMS).mini_batch_size is None


@pytest.mark.parametrize("dims,weights,message", [
    ([64, 32], None, "exceed the embedding size 32"),
    ([], None, "one or more positive sizes"),
    ([16, 0], None, "one or more positive sizes"),
    ([16, 8], [1.0], "1 values for 2 dims"),
])
def test_bad_dims_or_weights_are_config_errors(dims, weights, message):
    with pytest.raises(ConfigError, match=message):
        MatryoshkaLoss(MultipleNegativesRankingLoss(), dims, weights, embedding_dim=32)


def test_the_model_builds_the_loss_with_the_embedding_size(tiny_model_dir):
    cfg = config(f"backbone.name_or_path={tiny_model_dir}", "loss.dims=[32,16]")
    module = BiEncoderModule.from_config(cfg)
    assert isinstance(module.loss, MatryoshkaLoss) and module.loss.dims == [32, 16]
    with pytest.raises(Exception) as raised:  # Hydra wraps the ConfigError; the command line prints its cause
        BiEncoderModule.from_config(config(f"backbone.name_or_path={tiny_model_dir}"))
    assert isinstance(user_error(raised.value), ConfigError)
    assert "exceed the embedding size 32" in str(user_error(raised.value))


@pytest.mark.parametrize("normalize", [False, True])
def test_truncated_encode_is_the_prefix_of_the_full_embeddings(tiny_model_dir, sentences, normalize, one_thread):
    full = SentenceEncoder.from_pretrained(tiny_model_dir, normalize=normalize).encode(sentences)
    truncated = SentenceEncoder.from_pretrained(tiny_model_dir, normalize=normalize, truncate_dim=8).encode(sentences)
    # As in sentence-transformers, truncation follows normalisation: a prefix, compared by cosine.
    torch.testing.assert_close(truncated, full[:, :8])
    assert SentenceEncoder.from_pretrained(tiny_model_dir, truncate_dim=8).encode([]).shape == (0, 8)


@pytest.mark.parametrize("normalize", [False, True])
def test_sentence_transformers_loads_a_truncated_model(tiny_model_dir, sentences, tmp_path: Path, normalize,
                                                       one_thread):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir, normalize=normalize, truncate_dim=8)
    encoder.save(tmp_path / "model")
    ours = encoder.encode(sentences)

    theirs = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert theirs.truncate_dim == 8
    torch.testing.assert_close(theirs.encode(sentences, convert_to_tensor=True), ours, atol=1e-5, rtol=1e-4)
    reloaded = SentenceEncoder.from_pretrained(tmp_path / "model")
    assert reloaded.truncate_dim == 8
    torch.testing.assert_close(reloaded.encode(sentences), ours)


def test_a_prefix_has_other_cosines_than_the_full_vector(tiny_model_dir, sentences, one_thread):
    # Guards the prefix tests above: a prefix is not the full vector, so its cosines differ.
    full = SentenceEncoder.from_pretrained(tiny_model_dir).encode(sentences)
    truncated = SentenceEncoder.from_pretrained(tiny_model_dir, truncate_dim=8).encode(sentences)
    assert truncated.shape == (len(sentences), 8)
    assert not torch.allclose(F.cosine_similarity(full[:1], full), F.cosine_similarity(truncated[:1], truncated))


@pytest.mark.parametrize("truncate_dim", [0, 33])
def test_truncate_dim_must_fit_the_embedding(tiny_model_dir, truncate_dim):
    with pytest.raises(ConfigError, match="truncate_dim must be between 1 and the embedding size 32"):
        SentenceEncoder.from_pretrained(tiny_model_dir, truncate_dim=truncate_dim)
