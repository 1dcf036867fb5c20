"""An exported model (embedlab.modeling.export) served by onnxruntime or OpenVINO, behind the encoder interface the
evaluators use: `encode(texts, batch_size, show_progress_bar, prompt_name)`."""

import queue
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from transformers import AutoTokenizer

from embedlab.config_checks import AUTO_PRECISION
from embedlab.errors import ConfigError
from embedlab.modeling.encoder import apply_prompt
from embedlab.modeling.model_files import read_json
from embedlab.modeling.precision import resolve_precision
from embedlab.modeling.tokenization import Tokenize

INSTALL_HINT = 'pip install "embedlab[export]"'
GRAPH_INPUTS = ("input_ids", "attention_mask")
EMBEDDING_OUTPUT = "sentence_embedding"
EXPORT_FILE = "export.json"
# OpenVINO's inference precision for each serving precision. onnxruntime has no bf16 kernels for these graphs on
# the CPU: it serves them as exported.
OPENVINO_PRECISIONS = {"32-true": "f32", "bf16-true": "bf16"}
AUTO_STREAMS = "auto"


class ExportedEncoder:
    """Embeds texts with an exported graph, tokenised and batched as `SentenceEncoder.encode` does. The runtime uses
    as many threads as torch (`torch.set_num_threads`, `threads=` of the scripts), shared out among `streams`
    batches that run at once (1: one batch at a time on all of them)."""

    def __init__(self, tokenize: Tokenize, run_graph: Callable[[dict[str, np.ndarray]], np.ndarray],
                 output_dim: int, prompts: dict[str, str], default_prompt_name: str | None, description: str,
                 streams: int):
        self.tokenize = tokenize
        self.streams = streams
        self.run_graph = run_graph
        self.output_dim = output_dim
        self.prompts = prompts
        self.default_prompt_name = default_prompt_name
        self.description = description

    @classmethod
    def load(cls, directory: str | Path, precision: str = "32-true", streams: int | str = AUTO_STREAMS
             ) -> "ExportedEncoder":
        """`precision`: 32-true, or for an OpenVINO export bf16-true (bf16 compute, where the CPU has bf16
        instructions); auto picks bf16-true for OpenVINO where it is native, 32-true otherwise. `streams`: batches
        run at once, each on its share of the threads; auto: two where there are two threads or more."""
        streams = resolve_streams(streams)
        settings = read_export_settings(directory)
        if settings is None:
            raise ConfigError(f"{directory} is not an exported model (no export.json); export one with "
                              "scripts/export.py")
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        graph = Path(directory) / settings["graph"]
        precision = serving_precision(settings["format"], precision)
        run_graph = (onnx_runtime(graph, streams) if settings["format"] == "onnx"
                     else openvino_runtime(graph, precision, streams))
        return cls(Tokenize(tokenizer, settings["max_seq_length"], settings["do_lower_case"]), run_graph,
                   settings["embedding_dim"], settings["prompts"], settings["default_prompt_name"],
                   f"{settings['format']} {settings['quantize']} {precision}", streams)

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False,
               prompt_name: str | None = None) -> Tensor:
        """Embeddings of `texts` as a CPU float tensor, in their order."""
        if not texts:
            return torch.empty(0, self.output_dim)
        prompted = [apply_prompt(self.prompts, self.default_prompt_name, text, prompt_name) for text in texts]
        return self.tokenize.in_length_order(prompted, batch_size, self._embed, show_progress_bar, self.streams)

    def _embed(self, features: dict[str, Tensor]) -> Tensor:
        return torch.from_numpy(self.run_graph({name: features[name].numpy() for name in GRAPH_INPUTS}))


def resolve_streams(streams: int | str) -> int:
    # Two batches side by side, each on half the threads, beat one batch on all of them for both runtimes (README,
    # "Export: serving without torch"): a small graph's operators split across threads leave them idle between.
    if streams == AUTO_STREAMS:
        return min(2, torch.get_num_threads())
    if not isinstance(streams, int) or streams < 1:
        raise ConfigError(f"streams must be auto or at least 1, got {streams!r}")
    return streams


def threads_per_stream(streams: int) -> int:
    return max(1, torch.get_num_threads() // streams)


def onnx_runtime(graph: Path, streams: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    try:
        import onnxruntime
    except ImportError as error:
        raise ConfigError(f"serving an ONNX export needs onnxruntime: {INSTALL_HINT}") from error
    options = onnxruntime.SessionOptions()
    # One session serves every stream: its runs are thread-safe, and each runs on the threads given here.
    options.intra_op_num_threads = threads_per_stream(streams)
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return lambda inputs: session.run([EMBEDDING_OUTPUT], inputs)[0]


def serving_precision(format: str, precision: str) -> str:
    if format == "onnx" and precision in (AUTO_PRECISION, "32-true"):
        return "32-true"
    if format == "onnx":
        raise ConfigError(f"an ONNX export serves in the precision it was exported in: precision {precision!r} "
                          f"is for OpenVINO exports ({', '.join(OPENVINO_PRECISIONS)})")
    precision = resolve_precision(precision, "cpu", "inference")
    if precision not in OPENVINO_PRECISIONS:
        raise ConfigError(f"an OpenVINO export serves at precision {', '.join(OPENVINO_PRECISIONS)} or auto, got "
                          f"{precision!r}")
    return precision


def openvino_runtime(graph: Path, precision: str, streams: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    try:
        import openvino
    except ImportError as error:
        raise ConfigError(f"serving an OpenVINO export needs openvino: {INSTALL_HINT}") from error
    # Chosen explicitly: on CPUs with bf16 units OpenVINO would otherwise compute in bf16 even when fp32 was asked.
    compiled = openvino.Core().compile_model(str(graph), "CPU", {
        "INFERENCE_NUM_THREADS": threads_per_stream(streams) * streams, "NUM_STREAMS": streams,
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]})
    # An infer request serves one batch at a time: each stream takes a free one.
    requests = queue.SimpleQueue()
    for _ in range(streams):
        requests.put(compiled.create_infer_request())

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        request = requests.get()
        try:
            return request.infer(inputs)[EMBEDDING_OUTPUT].copy()
        finally:
            requests.put(request)

    return run


def read_export_settings(directory: str | Path) -> dict | None:
    """The settings an export wrote, or None when `directory` is not an exported model."""
    path = Path(directory) / EXPORT_FILE
    return read_json(path) if path.is_file() else None
