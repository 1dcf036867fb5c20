"""Stand-ins for models in tests whose expected values are worked out by hand."""

from types import SimpleNamespace

import torch


class LookupEncoder:
    """Embeds each text as the vector given for it: rankings and similarities that can be worked out by hand."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode(self, texts, batch_size=32, show_progress_bar=False, prompt_name=None):
        return torch.tensor([self.vectors[text] for text in texts], dtype=torch.float32)


def trainer_for_data(collate=list, max_steps: int = -1) -> SimpleNamespace:
    """What a data module asks of the trainer it is attached to: one process, no resumed fit loop, and the model's
    collators (here `collate` itself, so batches come out as lists of rows)."""
    model = SimpleNamespace(make_collator=lambda columns, target, prompts: collate, make_eval_collator=lambda: collate)
    return SimpleNamespace(lightning_module=model, global_rank=0, world_size=1, fit_loop=None, max_steps=max_steps)
