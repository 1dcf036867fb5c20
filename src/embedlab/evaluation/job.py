"""`scripts/evaluate.py`: a saved model scored by the evaluators of conf/evaluation/, as training scores its runs."""

import json
import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from embedlab.errors import ConfigError
from embedlab.evaluation.latency import LatencyEvaluator
from embedlab.evaluation.report import write_results
from embedlab.evaluation.runner import peak_rss_mb, run_evaluators
from embedlab.evaluation.significance import per_query_of
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.exported import AUTO_STREAMS, ExportedEncoder, read_export_settings
from embedlab.modeling.precision import resolve_precision

log = logging.getLogger(__name__)
REFERENCE_BATCH_SIZE = 32


def evaluate(cfg: DictConfig) -> dict:
    """Every evaluator of `cfg.evaluation` on the model at `cfg.model_path`; results.json, results.md,
    similarities.json and per_query.json (for the report's paired tests) in the run directory."""
    run_dir = Path(cfg.paths.output_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    exported = read_export_settings(cfg.model_path)
    if cfg.streams not in (1, AUTO_STREAMS) and not exported:
        raise ConfigError(f"streams={cfg.streams} runs batches of an exported model side by side; "
                          f"{cfg.model_path} is a torch model: leave streams at auto")
    # The data loads first, so a missing file stops the run before the model is read.
    evaluators = instantiate(cfg.evaluation, _convert_="all")
    encoder = load_exported(cfg) if exported else load_encoder(cfg)
    rss_with_model = peak_rss_mb()

    results, similarities = run_evaluators(encoder, evaluators)
    latency = next((e for e in evaluators.values() if isinstance(e, LatencyEvaluator)), None)
    if latency is not None and cfg.compare_sentence_transformers:
        # An export is compared with sentence-transformers on the model it was exported from.
        reference = exported["source"] if exported else cfg.model_path
        results.update(_compare_with_sentence_transformers(latency, encoder, reference, cfg.device))
    results["model/path"] = str(cfg.model_path)
    results["memory/peak_rss_mb"] = peak_rss_mb()
    results["memory/peak_rss_above_model_mb"] = results["memory/peak_rss_mb"] - rss_with_model
    write_results(run_dir, results, similarities, per_query_of(evaluators.values()))
    _log_to_loggers(cfg, results)
    log.info("results in %s: %s", run_dir, json.dumps(results, sort_keys=True))
    return results


def load_encoder(cfg: DictConfig) -> SentenceEncoder:
    encoder = SentenceEncoder.from_pretrained(cfg.model_path, max_seq_length=cfg.max_seq_length).to(cfg.device)
    precision = resolve_precision(cfg.precision, cfg.device, "inference")
    if precision != "32-true" or cfg.compile:
        # fp32 eager is the loaded encoder as it is: no second copy of the weights in memory (or in peak RSS).
        encoder = encoder.inference_copy(precision, cfg.compile)
    return encoder


def load_exported(cfg: DictConfig) -> ExportedEncoder:
    """A folder written by scripts/export.py, served by its runtime on the CPU: an ONNX graph as it was exported, an
    OpenVINO graph at `precision` (auto: bf16 where the CPU computes it natively)."""
    if cfg.compile or cfg.device != "cpu" or cfg.max_seq_length:
        raise ConfigError(f"{cfg.model_path} is an exported model: it runs on the CPU as exported, so leave "
                          "compile, device and max_seq_length at their defaults")
    return ExportedEncoder.load(cfg.model_path, cfg.precision, cfg.streams)


def _compare_with_sentence_transformers(latency: LatencyEvaluator, encoder, model_path: str,
                                        device: str) -> dict:
    """sentence-transformers is the reference implementation, used here only as a yardstick for speed."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        log.warning("sentence-transformers is not installed: no throughput comparison")
        return {}
    reference = SentenceTransformer(str(model_path), device=device)
    return latency.compare(encoder, lambda texts, batch_size: reference.encode(texts, batch_size=batch_size),
                           "sentence_transformers", batch_size=REFERENCE_BATCH_SIZE)


def _log_to_loggers(cfg: DictConfig, results: dict) -> None:
    """Numbers to every configured logger; with W&B also the whole table (W&B tables take strings too)."""
    numbers = {key: value for key, value in results.items() if isinstance(value, (int, float))}
    for logger in (instantiate(c) for c in cfg.get("logger", {}).values()):
        logger.log_metrics(numbers)
        if hasattr(logger, "log_table"):
            logger.log_table("results", columns=["key", "value"],
                             data=[[key, str(value)] for key, value in sorted(results.items())])
        logger.finalize("success")
