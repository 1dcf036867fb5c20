"""The retrieval losses against sentence-transformers' own: GISTEmbed (false negatives vetted by a guide), MarginMSE
and DistillKLDiv (a teacher's scores); same value, same gradients. And the cached GISTEmbed through the objective:
its mini-batches must give the whole batch's gradients."""

import lightning as L
import pytest
import torch
from conftest import SENTENCES
from sentence_transformers.sentence_transformer import losses as st_losses
from test_gradcache import without_dropout
from test_losses import BATCH, assert_same_loss_and_grads, make_embeddings
from torch import nn
from torch.utils.data import DataLoader
from transformers import BertTokenizerFast

from embedlab import losses
from embedlab.errors import ConfigError, DataError
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.objectives.bi_encoder import BiEncoderModule


class PrecomputedWithTokenizer(nn.Module):
    """Stands in for a SentenceTransformer whose features carry their embedding under `key`; GISTEmbedLoss also
    wants a tokenizer to decide whether the guide can read the model's token ids."""

    device = torch.device("cpu")
    max_seq_length = 128

    def __init__(self, key: str, tokenizer):
        super().__init__()
        self.key = key
        self.tokenizer = tokenizer

    def forward(self, features):
        return {"sentence_embedding": features[self.key]}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return BertTokenizerFast.from_pretrained(tiny_model_dir)


def reference_gist(tokenizer, guide_embeddings, **settings):
    """sentence-transformers' GISTEmbedLoss over precomputed student and guide embeddings."""
    loss = st_losses.GISTEmbedLoss(PrecomputedWithTokenizer("student", tokenizer),
                                   PrecomputedWithTokenizer("guide", tokenizer), **settings)

    def run(embeddings):
        features = [{"student": student, "guide": guide} for student, guide in zip(embeddings, guide_embeddings)]
        return loss(features, None)

    return run


def guide_like(embeddings, noise: float, seed: int = 7) -> list[torch.Tensor]:
    """Guide embeddings near the student's, so that some in-batch candidates score above their positive."""
    generator = torch.Generator().manual_seed(seed)
    return [e.detach() + noise * torch.randn(e.shape, generator=generator) for e in embeddings]


@pytest.mark.parametrize("columns", [2, 3], ids=["pairs", "one_negative"])
@pytest.mark.parametrize("settings", [
    {},
    {"margin_strategy": "absolute", "margin": 0.1},
    {"margin_strategy": "relative", "margin": 0.05},
    {"contrast_anchors": False, "contrast_positives": False, "temperature": 0.05},
], ids=["defaults", "absolute_margin", "relative_margin", "anchor_positive_only"])
def test_gist_matches_sentence_transformers(columns, settings, tokenizer):
    embeddings = make_embeddings(columns, seed=3)
    guide = guide_like(embeddings, noise=0.8)
    ours = losses.GISTEmbedLoss(guide="unused", **settings)
    assert_same_loss_and_grads(lambda e: ours(e, guide_embeddings=guide), reference_gist(tokenizer, guide, **settings),
                               embeddings)


def test_the_guide_masks_candidates_it_scores_above_the_positive_less_the_margin():
    # With a margin below -2 no cosine passes the threshold: nothing is masked, and the loss is MNR's at scale
    # 1/temperature. With a margin above 2 every candidate but the positive is masked: the loss is zero.
    embeddings = make_embeddings(2, seed=4)
    guide = guide_like(embeddings, noise=1.0)
    keep_all = losses.GISTEmbedLoss(guide="unused", margin=-2.5, contrast_anchors=False, contrast_positives=False)
    mnr = losses.MultipleNegativesRankingLoss(scale=100.0, gather_across_devices=False)
    assert keep_all(embeddings, guide_embeddings=guide).item() == pytest.approx(mnr(embeddings).item(), rel=1e-5)
    mask_all = losses.GISTEmbedLoss(guide="unused", margin=2.5)
    assert mask_all(embeddings, guide_embeddings=guide).item() == pytest.approx(0.0, abs=1e-6)


def test_gist_refuses_a_bad_margin_strategy_and_a_missing_guide():
    with pytest.raises(ConfigError, match="margin_strategy"):
        losses.GISTEmbedLoss(guide="unused", margin_strategy="percent")
    with pytest.raises(ConfigError, match="guide's embeddings"):
        losses.GISTEmbedLoss(guide="unused")(make_embeddings(2))


@pytest.mark.parametrize("negatives", [1, 3])
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_margin_mse_matches_sentence_transformers(negatives, similarity):
    from sentence_transformers.util import pairwise_cos_sim, pairwise_dot_score

    embeddings = make_embeddings(2 + negatives, seed=5)
    teacher = torch.randn(BATCH, 1 + negatives, generator=torch.Generator().manual_seed(0)) * 3
    ours = losses.MarginMSELoss(similarity=similarity)
    theirs = st_losses.MarginMSELoss(nn.Identity(), similarity_fct={"dot": pairwise_dot_score,
                                                                    "cosine": pairwise_cos_sim}[similarity])
    # sentence-transformers takes the teacher's margins, or its scores of the positive and each negative.
    assert_same_loss_and_grads(lambda e: ours(e, teacher),
                               lambda e: theirs.compute_loss_from_embeddings(e, teacher), embeddings)


@pytest.mark.parametrize("temperatures", [{}, {"temperature": 2.0}, {"student_temperature": 0.5,
                                                                       "teacher_temperature": 3.0}])
def test_distill_kl_matches_sentence_transformers(temperatures):
    embeddings = make_embeddings(4, seed=6)
    teacher = torch.randn(BATCH, 3, generator=torch.Generator().manual_seed(1)) * 4
    ours = losses.DistillKLDivLoss(**temperatures)
    theirs = st_losses.DistillKLDivLoss(nn.Identity(), **temperatures)
    assert_same_loss_and_grads(lambda e: ours(e, teacher),
                               lambda e: theirs.compute_loss_from_embeddings(e, teacher), embeddings)


def test_teacher_scores_must_cover_every_candidate():
    with pytest.raises(DataError, match="2 teacher scores per row for 3 candidates"):
        losses.MarginMSELoss()(make_embeddings(4), torch.zeros(BATCH, 2))
    with pytest.raises(DataError, match="at least one negative"):
        losses.DistillKLDivLoss()(make_embeddings(2), torch.zeros(BATCH, 1))


COLUMNS = {"anchor": SENTENCES[:8], "positive": SENTENCES[-8:][::-1]}


class OneBatch(L.LightningDataModule):
    def __init__(self, encoder: SentenceEncoder):
        super().__init__()
        self.batch = {"features": {column: encoder.tokenize(texts) for column, texts in COLUMNS.items()}, "size": 8}

    def train_dataloader(self) -> DataLoader:
        return DataLoader([self.batch], batch_size=None)


def one_guided_step(tiny_model_dir, loss) -> dict:
    torch.manual_seed(0)
    encoder = without_dropout(SentenceEncoder.from_pretrained(tiny_model_dir))
    guide = SentenceEncoder.from_pretrained(tiny_model_dir)
    # No warm-up: a one-step run would otherwise be refused, its only step having rate 0.
    module = BiEncoderModule(encoder, loss, guide, warmup_ratio=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=OneBatch(encoder))
    assert all(not p.requires_grad for p in module.guide.parameters()) and not module.guide.training
    assert not any(name.startswith("guide.") for name in module.state_dict())
    return {name: p.grad for name, p in module.encoder.named_parameters() if p.grad is not None}


def test_cached_gist_gives_the_gradients_of_gist_on_the_whole_batch(tiny_model_dir, one_thread):
    plain = one_guided_step(tiny_model_dir, losses.GISTEmbedLoss(guide="unused", margin=0.05))
    cached = one_guided_step(tiny_model_dir, losses.CachedGISTEmbedLoss(guide="unused", mini_batch_size=2,
                                                                         margin=0.05))
    assert plain.keys() == cached.keys() and plain
    for name in plain:
        torch.testing.assert_close(plain[name], cached[name], rtol=0, atol=1e-6, msg=name)
