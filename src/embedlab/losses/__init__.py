"""Losses are small modules over model outputs. Each declares the data columns it consumes in `signature` and the
model output in `consumes`: sentence `embeddings` (bi-encoder) or `pair_logits` (cross-encoder)."""

from embedlab.losses.contrastive import ContrastiveLoss
from embedlab.losses.cosent import CoSENTLoss
from embedlab.losses.cosine import CosineSimilarityLoss
from embedlab.losses.mnr import MultipleNegativesRankingLoss
from embedlab.losses.pair_logits import (
           BinaryCrossEntropyLoss,
           PairCrossEntropyLoss,
           PairMSELoss,
)
from embedlab.losses.signature import Signature, choose_format
from embedlab.losses.softmax import SoftmaxLoss
from embedlab.losses.triplet import TripletLoss

__all__ = ["BinaryCrossEntropyLoss", "CoSENTLoss", "ContrastiveLoss", "CosineSimilarityLoss",
           "MultipleNegativesRankingLoss", "PairCrossEntropyLoss", "PairMSELoss", "Signature", "SoftmaxLoss",
           "TripletLoss", "choose_format"]
