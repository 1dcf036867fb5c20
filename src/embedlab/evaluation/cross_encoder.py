"""A cross-encoder's verdict on text pairs, for pair classification: ours, or any sequence-classification folder."""

import torch

from embedlab.errors import ConfigError
from embedlab.modeling.cross_encoder import CrossEncoder


class CrossEncoderScorer:
    """Reads both texts of a pair together and says whether the pair is positive.

    One output logit: the probability is its sigmoid and a pair is positive above 0.5. Several logits (an NLI
    head): the probability is the softmax of `positive_label` (a label name from the model's config, such as
    "entailment", or an index), and a pair is positive when that label has the largest logit.
    """

    def __init__(self, model_path: str, positive_label: str | int = 1, batch_size: int = 32):
        self.model = CrossEncoder.from_pretrained(model_path)
        self.batch_size = batch_size
        self.positive_index = self._label_index(positive_label)

    def _label_index(self, label: str | int) -> int:
        num_labels = self.model.num_labels
        if num_labels == 1:
            return 0
        if isinstance(label, str) and not label.isdigit():
            by_name = {name.lower(): index for name, index in self.model.model.config.label2id.items()}
            if label.lower() not in by_name:
                raise ConfigError(f"cross-encoder has no label {label!r}; its labels: {', '.join(by_name)}")
            return by_name[label.lower()]
        index = int(label)
        if not 0 <= index < num_labels:
            raise ConfigError(f"cross-encoder positive_label {index} is out of range for {num_labels} labels")
        return index

    def predict(self, first: list[str], second: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(probability of positive, 0/1 prediction) for each pair."""
        scores = self.model.predict(list(zip(first, second)), batch_size=self.batch_size, show_progress_bar=True)
        if self.model.num_labels == 1:
            return scores, (scores > 0.5).long()
        return scores.softmax(dim=-1)[:, self.positive_index], (scores.argmax(dim=-1) == self.positive_index).long()
