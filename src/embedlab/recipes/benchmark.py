"""embedlab against sentence-transformers, side by side (`python scripts/benchmark.py paths.data_dir=<dir>`).

Jobs (conf/benchmark.yaml `jobs`):
- `train_stsb_cosine`, `train_nli_mnr`: the stsb_cosine and nli_mnr_hardneg experiments' data, loss, batch and optimiser,
  `train.steps` optimiser steps timed after `train.warmup_steps`, in this process for both sides (embedlab's
  Lightning module and data module; sentence-transformers' model, tokenisation, loss and sampler in its trainer's
  optimisation recipe, see `train_reference`), from the same model, rows and seed; throughput in training pairs
  per second, quality the STSB test Spearman after those steps;
- `encode_bs32`, `encode_bs128`: `SentenceEncoder.encode` of the inference copy set by `encode.precision` and
  `encode.compile` against `SentenceTransformer.encode` on the STSB test sentences; throughput in sentences per
  second, quality the STSB test Spearman of the embeddings.

Each job runs `repeats` times interleaved (project, sentence-transformers, project, ...), so that a machine busy
for a while slows both sides alike; the ratio is the median of the per-repeat ratios. `full=true` adds the full
training runs and their final test Spearman. Writes benchmark.json into the Hydra run directory:
"<job>/ratio", "<job>/project/<metric>", "<job>/sentence_transformers/<metric>".
"""

import contextlib
import json
import logging
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose
from omegaconf import DictConfig

from embedlab.assembly import build_datamodule, build_run
from embedlab.config_checks import AUTO_PRECISION
from embedlab.data.sources import sample_texts
from embedlab.errors import ConfigError
from embedlab.evaluation.loaders import load_scored_pairs
from embedlab.evaluation.sts import STSEvaluator
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.export import export_encoder, needs_calibration
from embedlab.modeling.exported import ExportedEncoder
from embedlab.modeling.precision import (
    autocast,
    autocast_dtype,
    resolve_precision,
    weight_dtype,
)
from embedlab.recipes.reference import ReferenceSettings, train_sentence_transformers
from embedlab.recipes.stages import run_stage
from embedlab.run_folder import write_json

log = logging.getLogger("embedlab.benchmark")
QUALITY_BATCH_SIZE = 64
PROJECT, REFERENCE = "project", "sentence_transformers"
# sentence-transformers' ONNX and OpenVINO backends run in their own environment through this script.
PEER_WORKER = Path(__file__).resolve().parents[3] / "scripts" / "st_backend_worker.py"
PEER_RESULT_MARKER = "@@result "
NOTES: list[str] = []


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
        if precision != AUTO_PRECISION:
            autocast_dtype(precision)
    if cfg.encode.precision != AUTO_PRECISION:
        weight_dtype(cfg.encode.precision)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    results = {}
    for job in cfg.jobs:
        if job in TRAIN_JOBS:
            results.update(benchmark_training(cfg, job, work_dir / job))
        else:
            results.update(benchmark_encoding(cfg, job, work_dir))
        log.info("%s: %s", job, json.dumps({k: v for k, v in results.items() if k.startswith(f"{job}/")}))
    return results


def summarise(job: str, throughputs: dict[str, list[float]], unit: str) -> dict:
    """Medians per side; "<job>/ratio" is the project's over sentence-transformers' torch path, and every further
    side has its own "<job>/<side>/ratio" against that path too (medians of the per-repeat ratios)."""
    summary = {}
    for side, values in throughputs.items():
        summary[f"{job}/{side}/{unit}"] = statistics.median(values)
        if side != REFERENCE:
            ratios = [ours / theirs for ours, theirs in zip(values, throughputs[REFERENCE], strict=True)]
            summary[f"{job}/ratio" if side == PROJECT else f"{job}/{side}/ratio"] = statistics.median(ratios)
    return summary


def sts_test(cfg: DictConfig) -> STSEvaluator:
    """The STSB test pairs, scored the same way for both sides: Spearman of the cosine of each pair's embeddings."""
    return STSEvaluator("test/stsb", load_scored_pairs(cfg.encode.test), batch_size=QUALITY_BATCH_SIZE,
                        measures=["cosine"])


def test_spearman(evaluator: STSEvaluator, encoder) -> float:
    return evaluator(encoder)["test/stsb/spearman_cosine"]


class ReferenceEncoder:
    """sentence-transformers' model behind the interface the evaluators use, under an optional autocast."""

    def __init__(self, model, precision: str = "32-true"):
        self.model = model
        self.precision = precision

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor:
        with autocast(self.precision, self.model.device):
            return self.model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                     show_progress_bar=False).float().cpu()


def benchmark_encoding(cfg: DictConfig, job: str, work_dir: Path) -> dict:
    """Every encoder side on the STSB test sentences: the project's inference copy and its exports
    (`encode.exports`), sentence-transformers' torch path, and its ONNX and OpenVINO backends from their own
    environment (`sentence_transformers.backends`)."""
    from sentence_transformers import SentenceTransformer

    batch_size = ENCODE_JOBS[job]
    evaluator = sts_test(cfg)
    sentences = [text for pair in zip(evaluator.pairs.sentence1, evaluator.pairs.sentence2) for text in pair]
    precision = resolve_precision(cfg.encode.precision, cfg.device, "inference")
    project = SentenceEncoder.from_pretrained(cfg.model_path).to(cfg.device).inference_copy(precision,
                                                                                            cfg.encode.compile)
    reference = SentenceTransformer(str(cfg.model_path), device=cfg.device)
    if cfg.sentence_transformers.compile:
        reference[0].auto_model.compile(dynamic=True)
    encoders = {PROJECT: project, REFERENCE: ReferenceEncoder(reference, cfg.sentence_transformers.precision),
                **{f"{PROJECT}_{name}": ExportedEncoder.load(exported(cfg, name, work_dir / "exports"),
                                                             cfg.encode.precision, cfg.encode.streams)
                   for name in cfg.encode.exports}}
    with peer_backends(cfg, work_dir / "peer") as peers:
        encoders.update(peers)
        # The untimed first pass warms caches (and compiles); it also gives the quality figure.
        results = {f"{job}/{side}/test_spearman_cosine": test_spearman(evaluator, encoder)
                   for side, encoder in encoders.items()}
        throughputs = {side: [] for side in encoders}
        for _ in range(cfg.repeats):
            for side, encoder in encoders.items():
                throughputs[side].append(len(sentences) / encode_seconds(encoder, sentences, batch_size))
    return {**summarise(job, throughputs, "sentences_per_second"), **results}


def encode_seconds(encoder, texts: list[str], batch_size: int) -> float:
    """The time of one `encode`; a peer in another process reports its own, without the transfer."""
    start = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    return getattr(encoder, "last_encode_seconds", None) or time.perf_counter() - start


def exported(cfg: DictConfig, name: str, exports_dir: Path) -> Path:
    """The model exported as `name` (`onnx`, `onnx_int8`, `openvino`, `openvino_int8`), once per benchmark run."""
    format, _, quantize = name.partition("_")
    quantize = quantize or "none"
    folder = exports_dir / name
    if not folder.exists():
        calibration = cfg.encode.calibration
        texts = (sample_texts(calibration.source, "calibration texts", calibration.texts, calibration.seed)
                 if needs_calibration(format, quantize) else None)
        export_encoder(cfg.model_path, folder, format, quantize, calibration_texts=texts)
    return folder


class PeerEncoder:
    """One of sentence-transformers' backends in the peer process (scripts/st_backend_worker.py), behind the
    interface the evaluators use; `last_encode_seconds` is the time the peer measured for its last `encode`."""

    def __init__(self, worker: subprocess.Popen, backend: str, scratch: Path):
        self.worker = worker
        self.backend = backend
        self.output = scratch / f"{backend}.npy"
        self.log = scratch / "worker.log"
        self.last_encode_seconds: float | None = None

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor:
        reply = self.request({"backend": self.backend, "texts": list(texts), "batch_size": batch_size,
                              "output": str(self.output)})
        self.last_encode_seconds = reply["seconds"]
        return torch.from_numpy(np.load(self.output))

    def request(self, message: dict) -> dict:
        self.worker.stdin.write(json.dumps(message) + "\n")
        self.worker.stdin.flush()
        for line in self.worker.stdout:
            if line.startswith(PEER_RESULT_MARKER):
                return json.loads(line[len(PEER_RESULT_MARKER):])
        raise ConfigError(f"the sentence-transformers peer process stopped; its log: {self.log}")


@contextlib.contextmanager
def peer_backends(cfg: DictConfig, scratch: Path):
    """The configured sentence-transformers backends that load in the peer environment, as encoders by side name;
    none, with a note, when that environment does not exist."""
    backends = list(cfg.sentence_transformers.backends)
    python = Path(cfg.sentence_transformers.venv or "") / "bin" / "python"
    if not backends:
        yield {}
        return
    if not cfg.sentence_transformers.venv or not python.exists():
        note(f"sentence-transformers' {', '.join(backends)} backends skipped: no peer environment at "
             f"{cfg.sentence_transformers.venv} (README, 'Speed and benchmarks', says how to create it)")
        yield {}
        return
    scratch.mkdir(parents=True, exist_ok=True)
    stderr = (scratch / "worker.log").open("w")
    command = [str(python), str(PEER_WORKER), "--model", str(cfg.model_path), "--work", str(scratch),
               *(["--threads", str(cfg.threads)] if cfg.threads else [])]
    worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        peers = {}
        for backend in backends:
            encoder = PeerEncoder(worker, backend, scratch)
            reply = encoder.request({"backend": backend, "texts": ["warm-up"], "batch_size": 1,
                                     "output": str(encoder.output)})
            if "error" in reply:
                note(f"sentence-transformers' {backend} backend skipped: {reply['error']}")
            else:
                peers[f"{REFERENCE}_{backend}"] = encoder
        yield peers
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
        stderr.close()


def note(message: str) -> None:
    """A line printed with the table (and logged), for what the benchmark left out and why."""
    log.warning(message)
    NOTES.append(message)


def job_overrides(cfg: DictConfig, job: str) -> list[str]:
    """The job's experiment as `python train.py` would run it, with the benchmark's model, seed and batch."""
    return [f"experiment={TRAIN_JOBS[job].experiment}", f"paths.data_dir={cfg.paths.data_dir}",
            f"backbone.name_or_path={cfg.model_path}", f"seed={cfg.seed}", f"precision={cfg.precision}",
            f"data.batch_size={cfg.train.batch_size}", *cfg.project_overrides]


def project_train_config(cfg: DictConfig, job: str, output_dir: Path, max_steps: int | None = None) -> DictConfig:
    """The job's training config; with `max_steps`, a timing run: no checkpoints, logger or evaluation."""
    timing = [] if max_steps is None else [
        "~callbacks", "logger=none", f"trainer.max_steps={max_steps}", "trainer.max_epochs=-1",
        f"trainer.accelerator={torch.device(cfg.device).type.replace('cuda', 'gpu')}",
        "+trainer.enable_checkpointing=false", "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false"]
    return compose("train", overrides=[*job_overrides(cfg, job), f"paths.output_dir={output_dir}", *timing])


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


def train_project(cfg: DictConfig, job: str, output_dir: Path) -> tuple[float, SentenceEncoder]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    clock = StepClock(cfg.train.warmup_steps)
    train_cfg = project_train_config(cfg, job, output_dir, max_steps=cfg.train.warmup_steps + cfg.train.steps)
    run = build_run(train_cfg, callbacks=(LightningStepClock(clock),), evaluate=False)
    if cfg.compile:
        run.module.encoder.backbone.compile(dynamic=True)
    run.trainer.fit(run.module, datamodule=run.datamodule, weights_only=True)
    return clock.rows_per_second, run.module.encoder


def reference_rows(train_cfg: DictConfig) -> tuple[list[dict], list[str], str | None]:
    """The rows the project trains on, its text columns in the loss's order, and its target column."""
    datamodule = build_datamodule(train_cfg)
    rows, _ = datamodule.load_train(datamodule.format)
    return rows, datamodule.text_columns, datamodule.target_column


def train_reference(cfg: DictConfig, job: str, output_dir: Path, max_steps: int | None = None,
                    clock: StepClock | None = None):
    """sentence-transformers' side of a training job (embedlab.recipes.reference): its model and loss on the
    project's rows, batch, seed, optimiser settings and clipping. `max_steps` None: the experiment's epochs."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CosineSimilarityLoss,
        MultipleNegativesRankingLoss,
    )

    train_cfg = project_train_config(cfg, job, output_dir)
    rows, text_columns, target = reference_rows(train_cfg)
    torch.manual_seed(cfg.seed)
    model = SentenceTransformer(str(cfg.model_path), device=cfg.device)
    if cfg.sentence_transformers.compile:
        model[0].auto_model.compile(dynamic=True)
    in_batch = TRAIN_JOBS[job].loss == "mnr"
    loss_fn = (MultipleNegativesRankingLoss(model, scale=train_cfg.loss.scale) if in_batch
               else CosineSimilarityLoss(model))
    settings = ReferenceSettings(batch_size=cfg.train.batch_size, lr=train_cfg.optim.lr,
                                 warmup_ratio=train_cfg.optim.warmup_ratio,
                                 weight_decay=train_cfg.optim.weight_decay, epochs=train_cfg.trainer.max_epochs,
                                 max_steps=max_steps, seed=cfg.seed, precision=cfg.sentence_transformers.precision,
                                 no_duplicates=in_batch, gradient_clip=train_cfg.trainer.gradient_clip_val)
    return train_sentence_transformers(model, rows, text_columns, target, loss_fn, settings,
                                       on_step=clock.tick if clock is not None else None)


def benchmark_training(cfg: DictConfig, job: str, work_dir: Path) -> dict:
    evaluator = sts_test(cfg)
    steps = cfg.train.warmup_steps + cfg.train.steps
    throughputs = {PROJECT: [], REFERENCE: []}
    results = {}
    for repeat in range(cfg.repeats):
        last = repeat == cfg.repeats - 1
        speed, encoder = train_project(cfg, job, work_dir / f"project_{repeat}")
        throughputs[PROJECT].append(speed)
        if last:
            results[f"{job}/{PROJECT}/test_spearman_cosine"] = test_spearman(evaluator, encoder)
        clock = StepClock(cfg.train.warmup_steps)
        model = train_reference(cfg, job, work_dir / f"reference_{repeat}", steps, clock)
        throughputs[REFERENCE].append(clock.rows_per_second)
        if last:
            results[f"{job}/{REFERENCE}/test_spearman_cosine"] = test_spearman(evaluator, ReferenceEncoder(model))
    results.update(summarise(job, throughputs, "pairs_per_second"))
    if cfg.full:
        results.update(full_training(cfg, job, Path(cfg.paths.output_dir) / "full" / job, evaluator))
    return results


def full_training(cfg: DictConfig, job: str, work_dir: Path, evaluator: STSEvaluator) -> dict:
    """Whole runs, one per side, for the final quality: the experiment as a training stage (its run directory kept
    under `work_dir`), and sentence-transformers for the experiment's epochs."""
    project = run_stage(PROJECT, job_overrides(cfg, job), work_dir)
    clock = StepClock(warmup_steps=0)
    model = train_reference(cfg, job, work_dir / REFERENCE, clock=clock)
    return {f"{job}/{PROJECT}/full_test_spearman_cosine": project["test/stsb/spearman_cosine"],
            f"{job}/{PROJECT}/full_samples_per_second": project["train/samples_per_second"],
            f"{job}/{REFERENCE}/full_test_spearman_cosine": test_spearman(evaluator, ReferenceEncoder(model)),
            f"{job}/{REFERENCE}/full_samples_per_second": clock.rows_per_second}


def regressions(results: dict, min_ratio: dict[str, float]) -> list[str]:
    """One line for each job whose ratio is below its threshold (scripts/check_throughput.py)."""
    return [f"{job}: ratio {results[f'{job}/ratio']:.2f} is below the baseline {threshold:.2f}"
            for job, threshold in min_ratio.items() if results[f"{job}/ratio"] < threshold]


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


def sides_table(results: dict, jobs: list[str]) -> str:
    """Every side of each encode job against sentence-transformers' torch path: throughput, ratio, Spearman and
    its difference from that path's (the quality cost of a quantised side)."""
    lines = ["| job | side | sentences/s | ratio to ST torch | STSB test Spearman | Spearman - ST torch |",
             "|---|---|---|---|---|---|"]
    for job in (job for job in jobs if job in ENCODE_JOBS):
        baseline = results[f"{job}/{REFERENCE}/test_spearman_cosine"]
        sides = [key.split("/")[1] for key in results
                 if key.startswith(f"{job}/") and key.endswith("/test_spearman_cosine")]
        for side in sides:
            ratio_key = f"{job}/ratio" if side == PROJECT else f"{job}/{side}/ratio"
            ratio = 1.0 if side == REFERENCE else results[ratio_key]
            spearman = results[f"{job}/{side}/test_spearman_cosine"]
            lines.append(f"| {job} | {side} | {results[f'{job}/{side}/sentences_per_second']:.1f} | {ratio:.2f}x "
                         f"| {spearman:.4f} | {spearman - baseline:+.4f} |")
    return "\n".join(lines)


def benchmark(cfg: DictConfig) -> dict:
    """`scripts/benchmark.py`: every job, the tables printed, benchmark.json in the run directory."""
    NOTES.clear()
    with tempfile.TemporaryDirectory(prefix="benchmark_") as work_dir:
        results = run_benchmark(cfg, Path(work_dir))
    output = write_json(Path(cfg.paths.output_dir) / "benchmark.json", results)
    print(table(results, list(cfg.jobs)))
    if any(job in ENCODE_JOBS for job in cfg.jobs):
        print(sides_table(results, list(cfg.jobs)))
    for line in NOTES:
        print(f"note: {line}")
    print(f"(medians of {cfg.repeats} interleaved runs; {output})")
    return results
