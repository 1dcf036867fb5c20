"""Where a training step's time goes (`python scripts/profile_training.py paths.data_dir=<dir>`).

A benchmark training job (conf/benchmark.yaml `profile.job`, its settings as the benchmark trains it) runs
`train.warmup_steps` steps unprofiled, then `profile.steps` steps under torch.profiler. Each operator's own time
is put in one category: the optimiser (its update and gradient clipping, `zero_grad`), data (under the data
loader's `__next__`), matmuls, attention (scaled dot-product attention and what runs inside it), or other kernels; framework overhead is what is left of the wall time (Python,
Lightning, autograd's bookkeeping). The matmuls' floating-point operations, over the wall time and over their
own time, are set against the best rate of one large matmul of the step's dtype on this machine: the fraction of
the matmul limit the step reaches. CPU runs only: on a GPU operator times are launch times.
"""

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torch.profiler import ProfilerActivity, profile

from embedlab.assembly import build_run
from embedlab.errors import ConfigError
from embedlab.modeling.precision import autocast_dtype
from embedlab.recipes.benchmark import TRAIN_JOBS, project_train_config
from embedlab.run_folder import write_json

log = logging.getLogger("embedlab.profile")
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"}
ATTENTION_PREFIX = "aten::_scaled_dot_product"
OPTIMISER_KERNELS = ("aten::_fused_adam", "aten::_foreach_")
ZERO_GRAD = "Optimizer.zero_grad"
DATA_PREFIX = "enumerate(DataLoader)"
CATEGORIES = ("matmuls", "attention", "other kernels", "optimiser", "data", "framework overhead")
PEAK_SIZE = 2048


class ProfiledSteps(L.Callback):
    """Profiles the optimiser steps after the first `warmup_steps`, and times them."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps
        self.profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True)
        self.started = self.wall_seconds = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.warmup_steps:
            self.profiler.start()
            self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        self.wall_seconds = time.perf_counter() - self.started
        self.profiler.stop()


def category(event) -> str | None:
    """The category of an operator's own time, or None for what only groups other operators. Lightning runs the
    forward and backward passes inside the optimiser's `step` (as its closure), so the optimiser is told by its
    kernels (the fused update, gradient clipping's foreach norms) and by `zero_grad`, not by that parent."""
    ancestors = []
    parent = event.cpu_parent
    while parent is not None:
        ancestors.append(parent.name)
        parent = parent.cpu_parent
    if event.name.startswith(OPTIMISER_KERNELS) or any(name.startswith(ZERO_GRAD) for name in ancestors):
        return "optimiser"
    if any(name.startswith(DATA_PREFIX) for name in ancestors):
        return "data"
    if event.name.startswith(ATTENTION_PREFIX) or any(name.startswith(ATTENTION_PREFIX) for name in ancestors):
        return "attention"
    if event.name in MATMULS:
        return "matmuls"
    return "other kernels" if event.name.startswith("aten::") else None


def split_time(events, wall_seconds: float) -> tuple[dict[str, float], float]:
    """Seconds per category, and the matmuls' floating-point operations."""
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    flops = 0.0
    for event in events:
        kind = category(event)
        if kind is not None:
            seconds[kind] += event.self_cpu_time_total / 1e6
        if event.name in MATMULS and kind == "matmuls":
            flops += event.flops or 0
    seconds["framework overhead"] = max(0.0, wall_seconds - sum(seconds.values()))
    return seconds, flops


def matmul_limit(dtype: torch.dtype, size: int = PEAK_SIZE, repeats: int = 5) -> float:
    """The best floating-point operations per second of one square matmul of `dtype` on this CPU."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def profile_training(cfg: DictConfig) -> dict:
    """The profile table of `cfg.profile.job`, printed and written to profile.json in the run directory."""
    job = cfg.profile.job
    if job not in TRAIN_JOBS:
        raise ConfigError(f"profile.job must be one of {', '.join(TRAIN_JOBS)}, got {job!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    steps = cfg.train.warmup_steps + cfg.profile.steps
    clock = ProfiledSteps(cfg.train.warmup_steps)
    run = build_run(project_train_config(cfg, job, output_dir / "run", max_steps=steps), callbacks=(clock,),
                    evaluate=False)
    run.trainer.fit(run.module, datamodule=run.datamodule, weights_only=True)
    seconds, flops = split_time(clock.profiler.events(), clock.wall_seconds)
    dtype = autocast_dtype(str(run.trainer.precision)) or torch.float32
    limit = matmul_limit(dtype)
    per_step = {kind: value / cfg.profile.steps for kind, value in seconds.items()}
    results = {"job": job, "precision": str(run.trainer.precision), "threads": torch.get_num_threads(),
               "step_seconds": clock.wall_seconds / cfg.profile.steps, "seconds_per_step": per_step,
               "matmul_gflops_per_step": flops / cfg.profile.steps / 1e9, "matmul_limit_gflops_per_second": limit / 1e9,
               "fraction_of_matmul_limit": flops / clock.wall_seconds / limit,
               "matmul_kernel_fraction_of_limit": flops / max(seconds["matmuls"], 1e-9) / limit}
    write_json(output_dir / "profile.json", results)
    print(table(results))
    print(f"({json.dumps({k: v for k, v in results.items() if k != 'seconds_per_step'})}; {output_dir}/profile.json)")
    return results


def table(results: dict) -> str:
    step = results["step_seconds"]
    title = (f"{results['job']}, precision {results['precision']}, {results['threads']} threads: "
             f"{step * 1000:.0f} ms per step")
    lines = [title, "| part | ms per step | share |", "|---|---|---|"]
    for kind, value in results["seconds_per_step"].items():
        lines.append(f"| {kind} | {value * 1000:.1f} | {value / step:.0%} |")
    lines.append(f"matmuls: {results['matmul_gflops_per_step']:.1f} GFLOP per step; the limit, one "
                 f"{PEAK_SIZE}x{PEAK_SIZE} matmul: {results['matmul_limit_gflops_per_second']:.0f} GFLOP/s; "
                 f"the step reaches {results['fraction_of_matmul_limit']:.0%} of it over its wall time, the matmul "
                 f"kernels {results['matmul_kernel_fraction_of_limit']:.0%} while they run")
    return "\n".join(lines)
