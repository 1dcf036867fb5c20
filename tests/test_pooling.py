"""embedlab.modeling.pooling.pool, every mode, against sentence-transformers' Pooling module."""

import pytest
import torch
from sentence_transformers.sentence_transformer.modules import Pooling

from embedlab.modeling.pooling import POOLING_MODES, pool

BATCH, TOKENS, DIM = 4, 7, 16
LENGTHS = [7, 3, 5, 1]


def padded_batch(left: bool = False):
    torch.manual_seed(0)
    tokens = torch.randn(BATCH, TOKENS, DIM)
    mask = torch.zeros(BATCH, TOKENS, dtype=torch.long)
    for row, length in enumerate(LENGTHS):
        if left:
            mask[row, TOKENS - length:] = 1
        else:
            mask[row, :length] = 1
    # Padding positions hold large values: any pooling that lets them through gives a different answer.
    tokens = tokens.masked_fill(mask.unsqueeze(-1) == 0, 50.0)
    return tokens, mask


def reference(tokens, mask, mode):
    module = Pooling(DIM, pooling_mode=mode)
    return module({"token_embeddings": tokens.clone(), "attention_mask": mask})["sentence_embedding"]


def test_modes_are_every_sentence_transformers_mode():
    assert set(POOLING_MODES) == set(Pooling.POOLING_MODES)


@pytest.mark.parametrize("left", [False, True], ids=["right_padded", "left_padded"])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pool_matches_sentence_transformers(mode, left):
    tokens, mask = padded_batch(left)
    ours = pool(tokens, mask, mode)
    assert ours.shape == (BATCH, DIM)
    torch.testing.assert_close(ours, reference(tokens, mask, mode), rtol=0, atol=1e-6)


def test_pool_ignores_padding():
    tokens, mask = padded_batch()
    row, length = 1, LENGTHS[1]
    real = tokens[row, :length]
    torch.testing.assert_close(pool(tokens, mask, "mean")[row], real.mean(dim=0))
    torch.testing.assert_close(pool(tokens, mask, "max")[row], real.max(dim=0).values)
    torch.testing.assert_close(pool(tokens, mask, "cls")[row], real[0])
    torch.testing.assert_close(pool(tokens, mask, "lasttoken")[row], real[-1])
    torch.testing.assert_close(pool(tokens, mask, "mean_sqrt_len_tokens")[row], real.sum(dim=0) / length ** 0.5)
    weights = torch.arange(1.0, length + 1).unsqueeze(-1)
    torch.testing.assert_close(pool(tokens, mask, "weightedmean")[row], (real * weights).sum(dim=0) / weights.sum())


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_left_and_right_padding_pool_alike(mode):
    # The same real tokens, padded on either side: every mode finds them, the last one included.
    right, right_mask = padded_batch(left=False)
    left, left_mask = padded_batch(left=True)
    for row, length in enumerate(LENGTHS):
        left[row, TOKENS - length:] = right[row, :length]
    torch.testing.assert_close(pool(left, left_mask, mode), pool(right, right_mask, mode))


def test_pool_passes_gradients_only_to_real_tokens():
    tokens, mask = padded_batch()
    tokens.requires_grad_(True)
    pool(tokens, mask, "mean").sum().backward()
    assert (tokens.grad[mask == 0] == 0).all()
    assert (tokens.grad[mask == 1] != 0).all()


@pytest.mark.parametrize("mode", ["sum", "Mean", "", "last_token"])
def test_unknown_mode_raises(mode):
    tokens, mask = padded_batch()
    with pytest.raises(ValueError, match="unknown pooling mode"):
        pool(tokens, mask, mode)
