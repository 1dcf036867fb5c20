"""Losses are small modules over embeddings. Each declares the data columns it consumes in `signature`."""

from embedlab.losses.contrastive import ContrastiveLoss
from embedlab.losses.cosent import CoSENTLoss
from embedlab.losses.cosine import CosineSimilarityLoss
from embedlab.losses.mnr import MultipleNegativesRankingLoss
from embedlab.losses.signature import Signature, choose_format
from embedlab.losses.softmax import SoftmaxLoss
from embedlab.losses.triplet import TripletLoss

__all__ = ["ContrastiveLoss", "CoSENTLoss", "CosineSimilarityLoss", "MultipleNegativesRankingLoss", "Signature",
           "SoftmaxLoss", "TripletLoss", "choose_format"]
