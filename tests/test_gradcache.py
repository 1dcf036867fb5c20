"""GradCache (`loss=cached_mnr`): embedding in mini-batches must give MNR's loss and gradients exactly."""

import lightning as L
import pytest
import torch
from conftest import SENTENCES
from torch import nn
from torch.utils.data import DataLoader

from embedlab.errors import ConfigError
from embedlab.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from embedlab.losses.mnr import DIRECTIONS
from embedlab.modeling.dropout import use_dropout_masks
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.objectives.bi_encoder import BiEncoderModule

BATCH, MINI_BATCH = 8, 2
COLUMNS = {"anchor": SENTENCES[:BATCH], "positive": SENTENCES[-BATCH:][::-1]}


@pytest.fixture
def encoder(tiny_model_dir, one_thread) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(tiny_model_dir).train()


def without_dropout(encoder: SentenceEncoder) -> SentenceEncoder:
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return encoder


def whole_batch(encoder: SentenceEncoder, texts: list[str]) -> torch.Tensor:
    return encoder(encoder.tokenize(texts))


def mini_batches_with_grad(encoder: SentenceEncoder, texts: list[str]) -> torch.Tensor:
    # What the cached pass computes, keeping every activation: the same mini-batches, each padded on its own.
    return torch.cat([encoder(encoder.tokenize(texts[i:i + MINI_BATCH])) for i in range(0, len(texts), MINI_BATCH)])


def cached(encoder: SentenceEncoder, texts: list[str]) -> torch.Tensor:
    return encoder.forward_in_mini_batches(encoder.tokenize(texts), MINI_BATCH)


def loss_and_gradients(encoder: SentenceEncoder, embed, loss: nn.Module) -> tuple[torch.Tensor, dict]:
    encoder.zero_grad()
    torch.manual_seed(0)
    value = loss([embed(encoder, texts) for texts in COLUMNS.values()])
    value.backward()
    grads = {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}
    return value.detach(), grads


def assert_same(first: tuple[torch.Tensor, dict], second: tuple[torch.Tensor, dict]) -> None:
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=1e-5)
    assert first[1].keys() == second[1].keys() and len(first[1]) > 0
    for name in first[1]:
        torch.testing.assert_close(first[1][name], second[1][name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("directions", [("query_to_doc",), DIRECTIONS])
def test_cached_mnr_equals_mnr_on_the_whole_batch(encoder, directions):
    without_dropout(encoder)
    plain = loss_and_gradients(encoder, whole_batch, MultipleNegativesRankingLoss(directions=directions))
    gradcache = loss_and_gradients(encoder, cached, CachedMultipleNegativesRankingLoss(MINI_BATCH,
                                                                                         directions=directions))
    assert_same(plain, gradcache)


@pytest.mark.parametrize("masks", ["torch", "packed"])
def test_with_dropout_the_gradients_are_those_of_the_reported_loss(encoder, masks):
    # Backward re-runs each mini-batch; only with the first run's random state do its dropout masks, and so the
    # gradients, belong to the loss that was reported.
    use_dropout_masks(encoder, masks)
    loss = MultipleNegativesRankingLoss()
    kept = loss_and_gradients(encoder, mini_batches_with_grad, loss)
    gradcache = loss_and_gradients(encoder, cached, loss)
    assert_same(kept, gradcache)
    # Guards the comparison: dropout is on, so another seed gives other gradients.
    torch.manual_seed(1)
    other = loss([cached(encoder, texts) for texts in COLUMNS.values()])
    assert not torch.allclose(other.detach(), gradcache[0])


class OneBatch(L.LightningDataModule):
    def __init__(self, encoder: SentenceEncoder):
        super().__init__()
        self.batch = {"features": {column: encoder.tokenize(texts) for column, texts in COLUMNS.items()},
                      "size": BATCH}

    def train_dataloader(self) -> DataLoader:
        return DataLoader([self.batch], batch_size=None)


def a_lightning_step(tiny_model_dir, loss: nn.Module, clip: float) -> tuple[dict, int]:
    """The gradients left after one clipped training step, and how many times the backbone ran."""
    torch.manual_seed(0)
    encoder = without_dropout(SentenceEncoder.from_pretrained(tiny_model_dir))
    backbone_runs = []
    encoder.backbone.register_forward_hook(lambda *_: backbone_runs.append(1))
    # No warm-up: a one-step run whose step is the warm-up's first (rate 0) is refused.
    module = BiEncoderModule(encoder, loss, warmup_ratio=0.0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, gradient_clip_val=clip, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=OneBatch(encoder))
    return {name: p.grad for name, p in module.encoder.named_parameters() if p.grad is not None}, len(backbone_runs)


def test_lightning_backward_and_clipping_see_mnr_gradients(tiny_model_dir, one_thread):
    clip = 0.05
    plain, plain_runs = a_lightning_step(tiny_model_dir, MultipleNegativesRankingLoss(), clip)
    gradcache, cached_runs = a_lightning_step(tiny_model_dir, CachedMultipleNegativesRankingLoss(MINI_BATCH), clip)
    # One run per column; cached: one per mini-batch, and each again in backward.
    assert (plain_runs, cached_runs) == (len(COLUMNS), 2 * len(COLUMNS) * BATCH // MINI_BATCH)
    assert plain.keys() == gradcache.keys() and len(plain) > 0
    for name in plain:
        torch.testing.assert_close(plain[name], gradcache[name], rtol=0, atol=1e-6, msg=name)
    # The clip was binding, so the comparison covers clipped gradients.
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradcache.values()]))
    assert total_norm == pytest.approx(clip, rel=1e-3)


def test_mini_batch_size_must_be_positive():
    with pytest.raises(ConfigError, match="mini_batch_size"):
        CachedMultipleNegativesRankingLoss(mini_batch_size=0)
