"""AdamW with linear warmup and linear decay, the schedule every objective here trains with."""

import math

import lightning as L
import torch

# Biases and normalisation weights are not decayed: shrinking them towards zero only hurts.
NO_WEIGHT_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def adamw_with_warmup(module: L.LightningModule, lr: float, weight_decay: float, warmup_ratio: float) -> dict:
    decay, no_decay = [], []
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith(NO_WEIGHT_DECAY) else decay).append(parameter)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    total = max(1, int(module.trainer.estimated_stepping_batches))
    warmup = math.ceil(warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_warmup_decay(step, warmup, total))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))
