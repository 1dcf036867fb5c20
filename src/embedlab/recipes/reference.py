"""sentence-transformers' own training, the peer side of the benchmarks: its model, tokenisation (`preprocess`) and
loss on the project's rows, batch and seed, trained the way its trainer trains: AdamW without decay on biases and
LayerNorm weights, linear warm-up and decay, gradient clipping, and its no-duplicates batch sampler for in-batch
losses. The loop is a plain one rather than SentenceTransformerTrainer, which needs `accelerate` and adds the Hugging
Face Trainer's bookkeeping to every step: if anything the reference runs faster so, and a ratio does not flatter the
project.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from embedlab.data.collate import target_tensor
from embedlab.modeling.precision import autocast

NO_DECAY = ("bias", "LayerNorm.weight")


@dataclass
class ReferenceSettings:
    batch_size: int
    lr: float
    warmup_ratio: float
    weight_decay: float = 0.0
    epochs: int = 1
    # Set: train exactly this many steps (across epochs); None: `epochs` passes over the rows.
    max_steps: int | None = None
    seed: int = 42
    precision: str = "32-true"
    # True: sentence-transformers' NoDuplicatesBatchSampler (for in-batch negatives); False: a random sampler.
    no_duplicates: bool = False
    gradient_clip: float = 1.0


def train_sentence_transformers(model, rows: list[dict], text_columns: list[str], target: str | None, loss_fn,
                                settings: ReferenceSettings,
                                on_step: Callable[[int, int], None] | None = None):
    """Train `model` (a SentenceTransformer) with `loss_fn` (a sentence-transformers loss over it) on `rows`;
    `on_step(step, rows)` runs after each optimiser step. Returns the model in eval mode."""
    import datasets
    from sentence_transformers.base import NoDuplicatesBatchSampler
    from sentence_transformers.util import batch_to_device
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(settings.seed)
    model.train()
    generator = torch.Generator().manual_seed(settings.seed)
    if settings.no_duplicates:
        table = datasets.Dataset.from_list([{column: row[column] for column in text_columns} for row in rows])
        batches = NoDuplicatesBatchSampler(table, batch_size=settings.batch_size, drop_last=False,
                                           generator=generator, seed=settings.seed)
    else:
        batches = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(rows, generator=generator),
                                                batch_size=settings.batch_size, drop_last=False)
    total = settings.max_steps or settings.epochs * len(batches)
    parameters = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for name, p in parameters if not name.endswith(NO_DECAY)], "weight_decay": settings.weight_decay},
        {"params": [p for name, p in parameters if name.endswith(NO_DECAY)], "weight_decay": 0.0}], lr=settings.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(settings.warmup_ratio * total), total)
    step, epoch = 0, 0
    while step < total:
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        for indices in batches:
            batch = [rows[index] for index in indices]
            features = [batch_to_device(model.preprocess([row[column] for row in batch]), model.device)
                        for column in text_columns]
            labels = target_tensor(batch, target).to(model.device) if target else None
            with autocast(settings.precision, model.device):
                loss = loss_fn(features, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.gradient_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if on_step is not None:
                on_step(step, len(batch))
            if step == total:
                break
        epoch += 1
    model.eval()
    return model
