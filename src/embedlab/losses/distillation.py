"""Distillation from a teacher's scores (a cross-encoder's, say) of each query's candidates: the positive first,
then the hard negatives, in the `scores` column."""

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.errors import ConfigError, DataError
from embedlab.losses.base import Loss
from embedlab.losses.signature import Signature

SIMILARITIES = ("dot", "cosine")


class _TeacherScoresLoss(Loss):
    signature = Signature(texts=("anchor", "positive"), repeated="negative", target="scores")
    consumes = "embeddings"

    def __init__(self, similarity: str = "dot"):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ConfigError(f"loss.similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
        self.similarity = similarity

    def student_scores(self, embeddings: list[Tensor], teacher_scores: Tensor) -> Tensor:
        """The student's score of each candidate, [batch, candidates], in the teacher's order."""
        query, *candidates = embeddings
        if teacher_scores.shape != (query.shape[0], len(candidates)):
            raise DataError(f"the scores column holds {teacher_scores.shape[-1]} teacher scores per row for "
                            f"{len(candidates)} candidates (the positive, then each negative)")
        if self.similarity == "cosine":
            query, candidates = F.normalize(query, dim=-1), [F.normalize(c, dim=-1) for c in candidates]
        return torch.stack([(query * candidate).sum(dim=-1) for candidate in candidates], dim=1)


class MarginMSELoss(_TeacherScoresLoss):
    """The student's margin between the positive and each negative regresses on the teacher's (Hofstätter et al.,
    2020): mean squared error of (s(q, p) - s(q, n_i)) against (t(q, p) - t(q, n_i)). Needs at least one negative."""

    def forward(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        student = self.student_scores(embeddings, labels)
        if student.shape[1] < 2:
            raise DataError("loss 'margin_mse' needs at least one negative column beside the positive")
        teacher = labels.detach().to(student.dtype)
        return F.mse_loss(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])


class DistillKLDivLoss(_TeacherScoresLoss):
    """The student's distribution over each query's candidates matches the teacher's: KL divergence of the softmax
    of the teacher's scores to that of the student's, each over its temperature, scaled by the student's
    temperature squared so that gradients keep their size across temperatures (the KD convention)."""

    def __init__(self, similarity: str = "dot", temperature: float = 1.0, student_temperature: float | None = None,
                 teacher_temperature: float | None = None):
        super().__init__(similarity)
        self.student_temperature = temperature if student_temperature is None else student_temperature
        self.teacher_temperature = temperature if teacher_temperature is None else teacher_temperature
        if min(self.student_temperature, self.teacher_temperature) <= 0:
            raise ConfigError("loss temperatures must be positive")

    def forward(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        student = self.student_scores(embeddings, labels)
        if student.shape[1] < 2:
            raise DataError("loss 'distill_kl' needs at least one negative column beside the positive")
        student_log_probs = F.log_softmax(student / self.student_temperature, dim=1)
        teacher_probs = F.softmax(labels.detach().to(student.dtype) / self.teacher_temperature, dim=1)
        loss = F.kl_div(student_log_probs, teacher_probs, reduction="batchmean")
        return loss * self.student_temperature ** 2
