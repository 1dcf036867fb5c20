"""AdamW with linear warmup, then linear decay to zero (`schedule="linear"`) or a constant rate ("constant"),
the schedules every objective here trains with, and the module base class that configures them."""

import logging
import math

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities import GradClipAlgorithmType

from embedlab.errors import ConfigError

log = logging.getLogger(__name__)

# Biases and normalisation weights are not decayed: shrinking them towards zero only hurts.
NO_WEIGHT_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")


class OptimizedModule(L.LightningModule):
    """A LightningModule trained with AdamW and the warm-up schedule of the `optim` settings."""

    def __init__(self, lr: float = 2e-5, weight_decay: float = 0.0, warmup_ratio: float = 0.1,
                 schedule: str = "linear"):
        super().__init__()
        self.optim = {"lr": lr, "weight_decay": weight_decay, "warmup_ratio": warmup_ratio,
                      "schedule": check_schedule(schedule)}

    def configure_optimizers(self):
        return adamw_with_warmup(self, **self.optim)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Lightning's mixed-precision plugin refuses to clip for a fused optimizer, as fp16's grad scaler unscales
        # inside a fused step; bf16 has no scaler, so its gradients are clipped as unmixed ones are, by the base
        # plugin's clipping.
        if gradient_clip_val and str(self.trainer.precision) == "bf16-mixed":
            Precision.clip_gradients(self.trainer.precision_plugin, optimizer, gradient_clip_val,
                                     GradClipAlgorithmType(gradient_clip_algorithm or GradClipAlgorithmType.NORM))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


def refuse_prompts(prompts, objective: str) -> None:
    if prompts:
        raise ConfigError(f"data.prompts: {objective} reads its texts without prompts, got {dict(prompts)}")


def check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    return schedule


def adamw_with_warmup(module: L.LightningModule, lr: float, weight_decay: float, warmup_ratio: float,
                      schedule: str = "linear") -> dict:
    decay, no_decay = [], []
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith(NO_WEIGHT_DECAY) else decay).append(parameter)
    # The fused kernel updates every tensor in one pass over memory, several times faster than the per-tensor
    # loop on a CPU; it is deterministic, so a seeded run still repeats bit for bit.
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=fused_supported(module))
    total = max(1, int(module.trainer.estimated_stepping_batches))
    warmup = math.ceil(warmup_ratio * total)
    if warmup >= total:
        check_warmup_ends(total, warmup_ratio, warn=module.trainer.is_global_zero)
    factor = SCHEDULES[check_schedule(schedule)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step, warmup, total))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def check_warmup_ends(total: int, warmup_ratio: float, warn: bool = True) -> None:
    """The warm-up's first step has rate 0: a run of one step would leave the model as it started, and a run that
    ends within the warm-up never trains at optim.lr."""
    if total == 1:
        raise ConfigError(f"the run has 1 optimiser step, and it is the warm-up's first (optim.warmup_ratio="
                          f"{warmup_ratio:g}), at learning rate 0: the model would not change; train more steps "
                          "(more rows, trainer.max_epochs, trainer.max_steps) or set optim.warmup_ratio=0")
    if warn:
        log.warning("all %d optimiser steps of the run fall within the warm-up (optim.warmup_ratio=%g): the "
                    "learning rate never reaches optim.lr", total, warmup_ratio)


def fused_supported(module: L.LightningModule) -> bool:
    """Torch's fused AdamW takes floating-point parameters on the CPU, CUDA and a few other devices. Under fp16
    mixed precision a fused step unscales the gradients itself, after they were clipped, so those runs keep the
    per-tensor loop."""
    if str(module.trainer.precision) == "16-mixed":
        return False
    return all(parameter.is_floating_point() and parameter.device.type in FUSED_DEVICES
               for parameter in module.parameters() if parameter.requires_grad)


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def linear_warmup_constant(step: int, warmup: int, total: int) -> float:
    return step / warmup if step < warmup else 1.0


# The factor of the peak rate at each step, by `optim.schedule`.
SCHEDULES = {"linear": linear_warmup_decay, "constant": linear_warmup_constant}
