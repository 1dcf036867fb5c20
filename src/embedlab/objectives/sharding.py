"""Sharded training (FSDP): which machines run it, and the full weights a save needs.

torch's FSDP (FullyShardedDataParallel, which Lightning's `fsdp` strategy wraps) runs on GPUs only. Under it each
process holds a shard of every weight, so a save gathers the full weights on rank 0 first.
"""

import contextlib

import lightning as L
import torch
from omegaconf import DictConfig

from embedlab.errors import ConfigError


def check_strategy(trainer_cfg: DictConfig) -> None:
    """Refuse, before anything loads, a sharded strategy the machine cannot run."""
    strategy, accelerator = str(trainer_cfg.get("strategy", "auto")), str(trainer_cfg.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if strategy.startswith("fsdp") and on_cpu:
        raise ConfigError(f"trainer.strategy={strategy} needs GPUs: torch's FSDP does not run on CPU; on CPU train "
                          "with trainer=ddp_cpu")


def full_weights(trainer: L.Trainer):
    """A context in which rank 0's modules hold their full weights (on CPU); every process must enter it, since
    the weights are gathered from all of them. Without sharding the weights are whole already."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = trainer.strategy.model
    if isinstance(model, FullyShardedDataParallel):
        return FullyShardedDataParallel.summon_full_params(model, writeback=False, rank0_only=True,
                                                           offload_to_cpu=True)
    return contextlib.nullcontext()
