"""embedlab against sentence-transformers, side by side: `python scripts/benchmark.py paths.data_dir=<dir>`.

Jobs (conf/benchmark.yaml `jobs`):
- `train_stsb_cosine`, `train_nli_mnr`: the stsb_cosine and nli_mnr_hardneg experiments' data, loss, batch and optimiser,
  `train.steps` optimiser steps timed after `train.warmup_steps`, in this process for both sides (embedlab's
  Lightning module and data module; sentence-transformers' model, tokenisation, loss and sampler in its trainer's
  optimisation recipe, see `train_reference`), from the same model, rows and seed; throughput in training pairs per second, quality the STSB test Spearman after those steps;
- `encode_bs32`, `encode_bs128`: `SentenceEncoder.encode` of the inference copy set by `encode.precision` and
  `encode.compile` against `SentenceTransformer.encode` on the STSB test sentences; throughput in sentences per
  second, quality the STSB test Spearman of the embeddings.

Each job runs `repeats` times interleaved (project, sentence-transformers, project, ...), so that a machine busy
for a while slows both sides alike; the ratio is the median of the per-repeat ratios. `full=true` adds the full
training runs and their final test Spearman. Writes benchmark.json into the Hydra run directory:
"<job>/ratio", "<job>/project/<metric>", "<job>/sentence_transformers/<metric>".
"""

import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from scipy.stats import spearmanr

from embedlab.config import CONF_DIR
from embedlab.data.sources import read_local
from embedlab.encoder import SentenceEncoder
from embedlab.errors import ConfigError, EmbedlabError
from embedlab.losses import configured_loss_class
from embedlab.models.bi_encoder import BiEncoderModule
from embedlab.precision import autocast, autocast_dtype, weight_dtype

log = logging.getLogger("embedlab.benchmark")
QUALITY_BATCH_SIZE = 64
PROJECT, REFERENCE = "project", "sentence_transformers"


@dataclass(frozen=True)
class TrainJob:
    experiment: str
    loss: str


TRAIN_JOBS = {"train_stsb_cosine": TrainJob("stsb_cosine", "cosine"),
              "train_nli_mnr": TrainJob("nli_mnr_hardneg", "mnr")}
ENCODE_JOBS = {"encode_bs32": 32, "encode_bs128": 128}


def run_benchmark(cfg: DictConfig, work_dir: Path) -> dict:
    """Every configured job, interleaved `cfg.repeats` times; returns the flat results."""
    unknown = sorted(set(cfg.jobs) - set(TRAIN_JOBS) - set(ENCODE_JOBS))
    if unknown:
        raise ConfigError(f"unknown benchmark jobs {unknown}; known: {sorted(TRAIN_JOBS) + sorted(ENCODE_JOBS)}")
    if cfg.repeats < 1 or cfg.train.steps < 1 or cfg.train.warmup_steps < 1:
        raise ConfigError(f"repeats, train.steps and train.warmup_steps must be at least 1, got {cfg.repeats}, "
                          f"{cfg.train.steps} and {cfg.train.warmup_steps}")
    for precision in (cfg.precision, cfg.sentence_transformers.precision):
        autocast_dtype(precision)
    weight_dtype(cfg.encode.precision)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    results = {}
    for job in cfg.jobs:
        if job in TRAIN_JOBS:
            results.update(benchmark_training(cfg, job, work_dir / job))
        else:
            results.update(benchmark_encoding(cfg, job))
        log.info("%s: %s", job, json.dumps({k: v for k, v in results.items() if k.startswith(f"{job}/")}))
    return results


def summarise(job: str, throughputs: dict[str, list[float]], unit: str) -> dict:
    ratios = [ours / theirs for ours, theirs in zip(throughputs[PROJECT], throughputs[REFERENCE], strict=True)]
    summary = {f"{job}/ratio": statistics.median(ratios)}
    for side, values in throughputs.items():
        summary[f"{job}/{side}/{unit}"] = statistics.median(values)
    return summary


def load_sts_test(cfg: DictConfig) -> tuple[list[tuple[str, str]], list[float]]:
    rows = read_local(**cfg.encode.test)
    return [(row["sentence1"], row["sentence2"]) for row in rows], [row["score"] for row in rows]


def sts_spearman(embed, pairs: list[tuple[str, str]], scores: list[float]) -> float:
    """Spearman of the cosine of each pair's embeddings against the gold scores; `embed(texts)` -> tensor."""
    embeddings = embed([text for pair in pairs for text in pair]).float()
    cosines = F.cosine_similarity(embeddings[0::2], embeddings[1::2])
    return float(spearmanr(cosines.cpu().numpy(), scores).statistic)


def project_embedder(encoder: SentenceEncoder, batch_size: int, precision: str = "32-true"):
    return lambda texts: encoder.encode(texts, batch_size=batch_size, precision=precision)


def reference_embedder(model, batch_size: int, precision: str = "32-true"):
    def embed(texts: list[str]) -> torch.Tensor:
        with autocast(precision, model.device):
            return model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    return embed


def benchmark_encoding(cfg: DictConfig, job: str) -> dict:
    from sentence_transformers import SentenceTransformer

    batch_size = ENCODE_JOBS[job]
    pairs, scores = load_sts_test(cfg)
    sentences = [text for pair in pairs for text in pair]
    project = SentenceEncoder.from_pretrained(cfg.model_path).to(cfg.device).inference_copy(cfg.encode.precision,
                                                                                            cfg.encode.compile)
    reference = SentenceTransformer(str(cfg.model_path), device=cfg.device)
    if cfg.sentence_transformers.compile:
        reference[0].auto_model.compile(dynamic=True)
    encoders = {PROJECT: project_embedder(project, batch_size),
                REFERENCE: reference_embedder(reference, batch_size, cfg.sentence_transformers.precision)}
    # The untimed first pass warms caches (and compiles); it also gives the quality figure.
    results = {f"{job}/{side}/test_spearman_cosine": sts_spearman(embed, pairs, scores)
               for side, embed in encoders.items()}
    throughputs = {PROJECT: [], REFERENCE: []}
    for _ in range(cfg.repeats):
        for side, embed in encoders.items():
            start = time.perf_counter()
            embed(sentences)
            throughputs[side].append(len(sentences) / (time.perf_counter() - start))
    return {**summarise(job, throughputs, "sentences_per_second"), **results}


def project_train_config(cfg: DictConfig, job: str, output_dir: Path) -> DictConfig:
    """The job's experiment as `python train.py` would compose it, with the benchmark's model, seed and batch."""
    return compose("train", overrides=[
        f"experiment={TRAIN_JOBS[job].experiment}", f"paths.data_dir={cfg.paths.data_dir}",
        f"paths.output_dir={output_dir}", f"backbone.name_or_path={cfg.model_path}", f"seed={cfg.seed}",
        f"precision={cfg.precision}", f"data.batch_size={cfg.train.batch_size}", *cfg.project_overrides])


class StepClock:
    """Rows trained per second over the optimiser steps after the first `warmup_steps` (with none: since made)."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps
        self.start = self.end = time.perf_counter()
        self.rows = 0

    def tick(self, step: int, rows: int) -> None:
        """Called after optimiser step `step` (counted from 1), which trained on `rows` rows."""
        if step == self.warmup_steps:
            self.start = time.perf_counter()
        elif step > self.warmup_steps:
            self.end = time.perf_counter()
            self.rows += rows

    @property
    def rows_per_second(self) -> float:
        return self.rows / (self.end - self.start)


class LightningStepClock(L.Callback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch: dict, batch_idx: int) -> None:
        self.clock.tick(trainer.global_step, batch["size"])


def build_project_run(train_cfg: DictConfig, loss_name: str) -> tuple[BiEncoderModule, object]:
    """The module and data module `embedlab.train` builds, without evaluation sets."""
    loss_class = configured_loss_class(train_cfg.loss)
    datamodule = instantiate(train_cfg.data, evaluation={}, _convert_="all")
    text_columns = datamodule.fit_loss(loss_name, loss_class)
    module = BiEncoderModule.from_config(train_cfg, text_columns)
    datamodule.make_collator = module.make_collator
    return module, datamodule


def train_project(cfg: DictConfig, job: str, output_dir: Path) -> tuple[float, SentenceEncoder]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train_cfg = project_train_config(cfg, job, output_dir)
    module, datamodule = build_project_run(train_cfg, TRAIN_JOBS[job].loss)
    if cfg.compile:
        module.encoder.backbone.compile(dynamic=True)
    clock = StepClock(cfg.train.warmup_steps)
    trainer = instantiate(train_cfg.trainer, accelerator=torch.device(cfg.device).type.replace("cuda", "gpu"),
                          max_epochs=-1, max_steps=cfg.train.warmup_steps + cfg.train.steps,
                          callbacks=[LightningStepClock(clock)], logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule, weights_only=True)
    return clock.rows_per_second, module.encoder


def reference_rows(train_cfg: DictConfig, loss_name: str) -> tuple[list[dict], list[str], str | None]:
    """The rows the project trains on, its text columns in the loss's order, and its target column."""
    loss_class = configured_loss_class(train_cfg.loss)
    datamodule = instantiate(train_cfg.data, evaluation={}, _convert_="all")
    text_columns = datamodule.fit_loss(loss_name, loss_class)
    rows, _ = datamodule.load_train(datamodule.format)
    return rows, text_columns, datamodule.target_column


def train_reference(cfg: DictConfig, job: str, output_dir: Path, max_steps: int | None = None,
                    clock: StepClock | None = None):
    """sentence-transformers' model, tokenisation (`preprocess`) and loss, on the project's rows, batch and seed,
    trained the way its trainer trains: AdamW without decay on biases and LayerNorm weights, linear warm-up and
    decay, gradient clipping, and its no-duplicates batch sampler for MNR. The loop is a plain one rather than
    SentenceTransformerTrainer, which needs `accelerate` and adds the Hugging Face Trainer's bookkeeping to every
    step: if anything the reference runs faster so, and the ratio does not flatter the project.
    `max_steps` None: the experiment's epochs.
    """
    import datasets
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base import NoDuplicatesBatchSampler
    from sentence_transformers.sentence_transformer.losses import (
        CosineSimilarityLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.util import batch_to_device
    from transformers import get_linear_schedule_with_warmup

    train_cfg = project_train_config(cfg, job, output_dir)
    rows, text_columns, target = reference_rows(train_cfg, TRAIN_JOBS[job].loss)
    torch.manual_seed(cfg.seed)
    model = SentenceTransformer(str(cfg.model_path), device=cfg.device)
    model.train()
    if cfg.sentence_transformers.compile:
        model[0].auto_model.compile(dynamic=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    if TRAIN_JOBS[job].loss == "mnr":
        loss_fn = MultipleNegativesRankingLoss(model, scale=train_cfg.loss.scale)
        table = datasets.Dataset.from_list([{column: row[column] for column in text_columns} for row in rows])
        batches = NoDuplicatesBatchSampler(table, batch_size=cfg.train.batch_size, drop_last=False,
                                           generator=generator, seed=cfg.seed)
    else:
        loss_fn = CosineSimilarityLoss(model)
        batches = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(rows, generator=generator),
                                                batch_size=cfg.train.batch_size, drop_last=False)
    total = max_steps or train_cfg.trainer.max_epochs * len(batches)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(("bias", "LayerNorm.weight"))]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(("bias", "LayerNorm.weight"))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train_cfg.optim.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=train_cfg.optim.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(train_cfg.optim.warmup_ratio * total), total)
    step, epoch = 0, 0
    while step < total:
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        for indices in batches:
            batch = [rows[index] for index in indices]
            features = [batch_to_device(model.preprocess([row[column] for row in batch]), model.device)
                        for column in text_columns]
            labels = torch.tensor([row[target] for row in batch], device=model.device) if target else None
            with autocast(cfg.sentence_transformers.precision, cfg.device):
                loss = loss_fn(features, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.trainer.gradient_clip_val)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if clock is not None:
                clock.tick(step, len(batch))
            if step == total:
                break
        epoch += 1
    model.eval()
    return model


def benchmark_training(cfg: DictConfig, job: str, work_dir: Path) -> dict:
    pairs, scores = load_sts_test(cfg)
    steps = cfg.train.warmup_steps + cfg.train.steps
    throughputs = {PROJECT: [], REFERENCE: []}
    results = {}
    for repeat in range(cfg.repeats):
        last = repeat == cfg.repeats - 1
        speed, encoder = train_project(cfg, job, work_dir / f"project_{repeat}")
        throughputs[PROJECT].append(speed)
        if last:
            results[f"{job}/{PROJECT}/test_spearman_cosine"] = sts_spearman(
                project_embedder(encoder, QUALITY_BATCH_SIZE), pairs, scores)
        clock = StepClock(cfg.train.warmup_steps)
        model = train_reference(cfg, job, work_dir / f"reference_{repeat}", steps, clock)
        throughputs[REFERENCE].append(clock.rows_per_second)
        if last:
            results[f"{job}/{REFERENCE}/test_spearman_cosine"] = sts_spearman(
                reference_embedder(model, QUALITY_BATCH_SIZE), pairs, scores)
    results.update(summarise(job, throughputs, "pairs_per_second"))
    if cfg.full:
        results.update(full_training(cfg, job, Path(cfg.paths.output_dir) / "full" / job, pairs, scores))
    return results


def full_training(cfg: DictConfig, job: str, work_dir: Path, pairs, scores) -> dict:
    """Whole runs, one per side, for the final quality: the experiment through `python -m embedlab.train` (its
    run directory kept under `work_dir`), and sentence-transformers for the experiment's epochs."""
    run_dir = work_dir / PROJECT
    command = [sys.executable, "-m", "embedlab.train", f"experiment={TRAIN_JOBS[job].experiment}",
               f"paths.data_dir={cfg.paths.data_dir}", f"backbone.name_or_path={cfg.model_path}",
               f"seed={cfg.seed}", f"precision={cfg.precision}", f"data.batch_size={cfg.train.batch_size}",
               f"hydra.run.dir={run_dir}", *cfg.project_overrides]
    finished = subprocess.run(command, check=False, capture_output=True, text=True)
    if finished.returncode != 0:
        raise EmbedlabError(f"{job}: the full embedlab run failed; see {run_dir}:\n{finished.stderr[-2000:]}")
    project = json.loads((run_dir / "results.json").read_text())
    clock = StepClock(warmup_steps=0)
    model = train_reference(cfg, job, work_dir / REFERENCE, clock=clock)
    reference_spearman = sts_spearman(reference_embedder(model, QUALITY_BATCH_SIZE), pairs, scores)
    return {f"{job}/{PROJECT}/full_test_spearman_cosine": project["test/stsb/spearman_cosine"],
            f"{job}/{PROJECT}/full_samples_per_second": project["train/samples_per_second"],
            f"{job}/{REFERENCE}/full_test_spearman_cosine": reference_spearman,
            f"{job}/{REFERENCE}/full_samples_per_second": clock.rows_per_second}


def table(results: dict, jobs: list[str]) -> str:
    """One row per job: both throughputs, the ratio and both quality figures (full-run ones when present)."""
    lines = ["| job | embedlab | sentence-transformers | ratio | embedlab Spearman | ST Spearman |",
             "|---|---|---|---|---|---|"]
    for job in jobs:
        unit = "sentences_per_second" if job in ENCODE_JOBS else "pairs_per_second"
        quality = "full_test_spearman_cosine" if f"{job}/{PROJECT}/full_test_spearman_cosine" in results else \
            "test_spearman_cosine"
        lines.append(f"| {job} | {results[f'{job}/{PROJECT}/{unit}']:.1f} {unit.split('_')[0]}/s "
                     f"| {results[f'{job}/{REFERENCE}/{unit}']:.1f} | {results[f'{job}/ratio']:.2f}x "
                     f"| {results[f'{job}/{PROJECT}/{quality}']:.4f} | {results[f'{job}/{REFERENCE}/{quality}']:.4f} |")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="benchmark")
def main(cfg: DictConfig) -> None:
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    try:
        with tempfile.TemporaryDirectory(prefix="benchmark_") as work_dir:
            results = run_benchmark(cfg, Path(work_dir))
    except EmbedlabError as error:
        print(f"embedlab: error: {error}", file=sys.stderr)
        sys.exit(1)
    (run_dir / "benchmark.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(table(results, list(cfg.jobs)))
    print(f"(medians of {cfg.repeats} interleaved runs; benchmark.json in {run_dir})")


if __name__ == "__main__":
    main()
