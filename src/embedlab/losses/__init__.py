"""Losses are small modules over model outputs. Each declares (`embedlab.losses.base.Loss`) the data columns it
consumes in `signature` and the model output in `consumes`: sentence `embeddings` (bi-encoder), `pair_logits`
(cross-encoder) or `token_logits` (TSDAE). A wrapper loss (Matryoshka) declares them through the loss it wraps:
`configured_loss_class` reads them from the config."""

from embedlab.losses.base import Loss
from embedlab.losses.cached_mnr import CachedMultipleNegativesRankingLoss
from embedlab.losses.contrastive import ContrastiveLoss
from embedlab.losses.cosent import CoSENTLoss
from embedlab.losses.cosine import CosineSimilarityLoss
from embedlab.losses.distillation import DistillKLDivLoss, MarginMSELoss
from embedlab.losses.gist import CachedGISTEmbedLoss, GISTEmbedLoss
from embedlab.losses.matryoshka import MatryoshkaLoss
from embedlab.losses.mnr import MultipleNegativesRankingLoss
from embedlab.losses.pair_logits import (
    BinaryCrossEntropyLoss,
    PairCrossEntropyLoss,
    PairMSELoss,
)
from embedlab.losses.reconstruction import ReconstructionLoss
from embedlab.losses.signature import Signature, choose_format, configured_loss_class
from embedlab.losses.softmax import SoftmaxLoss
from embedlab.losses.triplet import TripletLoss

__all__ = ["BinaryCrossEntropyLoss", "CachedGISTEmbedLoss", "CachedMultipleNegativesRankingLoss", "CoSENTLoss",
           "ContrastiveLoss", "CosineSimilarityLoss", "DistillKLDivLoss", "GISTEmbedLoss", "Loss", "MarginMSELoss",
           "MatryoshkaLoss", "MultipleNegativesRankingLoss", "PairCrossEntropyLoss",
           "PairMSELoss", "ReconstructionLoss", "Signature", "SoftmaxLoss", "TripletLoss", "choose_format",
           "configured_loss_class"]
