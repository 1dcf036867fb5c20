"""A sentence encoder exported to a serving graph: token ids and attention mask in, sentence embeddings out.

`export_encoder` writes a folder that serves without torch (`ExportedEncoder` in embedlab.modeling.exported reads
it):
- `sentence_embedding.onnx` (format=onnx) or `sentence_embedding.xml`/`.bin` (format=openvino): the embedding
  graph, with the pooling, normalisation and truncation of the model inside it. With quantize=int8 an ONNX graph
  has int8 weights (onnxruntime's dynamic quantisation: activations quantised per batch at run time), and an
  OpenVINO graph is quantised statically by NNCF: int8 weights and activations, each activation's range calibrated
  once on sample texts (`calibration_texts`), which lets OpenVINO run the matmuls in int8. The ONNX graph is fused
  into onnxruntime's transformer operators (embedlab.modeling.onnx_fusion) where the fused graph gives the torch
  model's embeddings, so that int8 reaches the attention's projections;
- the tokenizer files and `export.json` (what the tokenisation and the prompts need, and what was exported);
- the sentence-transformers layout around a token-embedding graph, `onnx/model.onnx` or
  `openvino/openvino_model.xml`, which `SentenceTransformer(dir, backend="onnx")` (or "openvino") loads, with
  sentence-transformers doing the pooling.

The graphs are traced by torch's own exporter (`torch.onnx.export(dynamo=True)`), which needs no optimum and works
under transformers 5; OpenVINO converts the ONNX file.
"""

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from embedlab.errors import ConfigError, first_line
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.exported import (
    EMBEDDING_OUTPUT,
    EXPORT_FILE,
    GRAPH_INPUTS,
    ExportedEncoder,
)
from embedlab.modeling.onnx_fusion import fuse_for_onnxruntime
from embedlab.run_folder import write_json

log = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino")
QUANTIZATIONS = ("none", "int8")
CALIBRATION_BATCH_SIZE = 32
TOKEN_OUTPUT = "last_hidden_state"
# Not sentence-transformers' own file names, which it would load from the folder's root in place of its graphs.
GRAPH_FILES = {"onnx": "sentence_embedding.onnx", "openvino": "sentence_embedding.xml"}
# Where sentence-transformers looks for each backend's graph of token embeddings.
SENTENCE_TRANSFORMERS_GRAPHS = {"onnx": Path("onnx") / "model.onnx",
                                "openvino": Path("openvino") / "openvino_model.xml"}
# The exported fp32 graph must give the torch model's embeddings to this tolerance.
FP32_TOLERANCE = 1e-4
PROBE_TEXTS = ["A man is playing a guitar on the stage.", "A dog runs.",
               "Two children play with a red ball in the park while their parents watch."]


class ExportGraph(nn.Module):
    """The encoder as one function of (input_ids, attention_mask), traced once for both graphs: the sentence
    embeddings (truncated as `encode` truncates them) and the token embeddings sentence-transformers pools itself."""

    def __init__(self, encoder: SentenceEncoder):
        super().__init__()
        self.encoder = encoder
        # Taken before tracing, so that a model without one backbone (static, routed) is refused in one line.
        self.backbone = encoder.backbone

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embeddings = self.encoder.sentence_embeddings(tokens, attention_mask)
        return embeddings[:, :self.encoder.output_dim], tokens


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def needs_calibration(format: str, quantize: str) -> bool:
    """Whether the export quantises statically, calibrated on sample texts (OpenVINO int8)."""
    return format == "openvino" and quantize == "int8"


def export_encoder(model_path: str, output_dir: str | Path, format: str = "onnx", quantize: str = "none",
                   opset: int = 18, calibration_texts: list[str] | None = None) -> Path:
    """Export the model at `model_path` into `output_dir` (replaced if it exists); returns the folder.
    `calibration_texts` calibrate an OpenVINO int8 graph's activation ranges (a few hundred texts like those it
    will serve)."""
    check_choice("format", format, FORMATS)
    check_choice("quantize", quantize, QUANTIZATIONS)
    static_int8 = needs_calibration(format, quantize)
    if static_int8 and not calibration_texts:
        raise ConfigError("format=openvino quantize=int8 calibrates the activations' ranges on sample texts, and "
                          "none were given: set calibration.source (scripts/export.py) or pass calibration_texts")
    output_dir = Path(output_dir)
    encoder = SentenceEncoder.from_pretrained(model_path).float().eval()
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    try:
        import onnx
    except ImportError as error:
        raise ConfigError('exporting needs onnx and onnxruntime: pip install "embedlab[export]"') from error
    calibration = calibration_batches(encoder, calibration_texts) if static_int8 else None
    with tempfile.TemporaryDirectory(prefix="export_") as scratch:
        traced = trace_to_onnx(encoder, Path(scratch) / "traced.onnx", opset)
        for output_name, target in ((EMBEDDING_OUTPUT, GRAPH_FILES[format]),
                                    (TOKEN_OUTPUT, SENTENCE_TRANSFORMERS_GRAPHS[format])):
            onnx_file = Path(scratch) / f"{output_name}.onnx"
            onnx.utils.extract_model(str(traced), str(onnx_file), list(GRAPH_INPUTS), [output_name])
            if format == "onnx" and output_name == EMBEDDING_OUTPUT:
                onnx_file = fused_if_faithful(encoder, onnx_file, Path(scratch) / "fused.onnx")
            if quantize == "int8" and not static_int8:
                onnx_file = quantize_int8(onnx_file, Path(scratch) / f"{output_name}_int8.onnx")
            (output_dir / target).parent.mkdir(parents=True, exist_ok=True)
            write_graph(onnx_file, output_dir / target, format, calibration)
    encoder.tokenizer.save_pretrained(output_dir)
    write_sentence_transformers_layout(encoder, output_dir)
    write_json(output_dir / EXPORT_FILE, {
        "format": format, "quantize": quantize, "graph": GRAPH_FILES[format], "source": str(model_path),
        "calibration_texts": len(calibration_texts) if static_int8 else 0,
        "embedding_dim": encoder.output_dim, "max_seq_length": encoder.max_seq_length,
        "do_lower_case": encoder.do_lower_case, "prompts": encoder.prompts,
        "default_prompt_name": encoder.default_prompt_name})
    check_export(encoder, output_dir, quantize)
    return output_dir


def trace_to_onnx(encoder: SentenceEncoder, path: Path, opset: int) -> Path:
    # Two texts of different lengths: a batch or a length of 1 would be traced as a constant.
    features = encoder.tokenize(PROBE_TEXTS[:2])
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    torch.onnx.export(ExportGraph(encoder).eval(), tuple(features[name] for name in GRAPH_INPUTS), str(path),
                      dynamo=True, input_names=list(GRAPH_INPUTS), output_names=[EMBEDDING_OUTPUT, TOKEN_OUTPUT],
                      opset_version=opset, dynamic_shapes={name: {0: batch, 1: sequence} for name in GRAPH_INPUTS},
                      external_data=False, verbose=False)
    return path


def fused_if_faithful(encoder: SentenceEncoder, source: Path, target: Path) -> Path:
    """The embedding graph fused for onnxruntime when the fused graph gives the torch model's embeddings (on padded
    probe texts, to FP32_TOLERANCE); else the graph as traced, with the reason logged."""
    import onnxruntime

    try:
        attentions = fuse_for_onnxruntime(source, target)
        features = encoder.tokenize(PROBE_TEXTS)
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        fused = session.run([EMBEDDING_OUTPUT], {name: features[name].numpy() for name in GRAPH_INPUTS})[0]
    except Exception as error:  # the fusions are an optimisation: any failure leaves the traced graph
        log.info("the ONNX graph is not fused for onnxruntime: %s", first_line(error))
        return source
    difference = difference_from_torch(encoder, torch.from_numpy(fused))
    if difference > FP32_TOLERANCE:
        log.info("the ONNX graph is not fused for onnxruntime: the fused graph differs from the model by %.2e",
                 difference)
        return source
    log.info("the ONNX graph is fused for onnxruntime (%d attention blocks)", attentions)
    return target


def quantize_int8(source: Path, target: Path) -> Path:
    """int8 weights, one scale per output channel, for every MatMul and fused attention; activations quantised per
    batch at run time. Per-channel scales lose less STSB quality than one scale per tensor (README, "Export")."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime's shape inference does not type the outputs of its own fused operators; they are all float.
    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Attention"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return target


def calibration_batches(encoder: SentenceEncoder, texts: list[str]) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for `texts`, in batches of texts of similar length, as `encode` cuts them."""
    texts = sorted(texts, key=len)
    batches = [encoder.tokenize(texts[start:start + CALIBRATION_BATCH_SIZE])
               for start in range(0, len(texts), CALIBRATION_BATCH_SIZE)]
    return [{name: batch[name].numpy() for name in GRAPH_INPUTS} for batch in batches]


def write_graph(onnx_file: Path, target: Path, format: str,
                calibration: list[dict[str, np.ndarray]] | None = None) -> None:
    """The ONNX file as the format's graph; an OpenVINO graph quantised to static int8 when given `calibration`
    batches."""
    if format == "onnx":
        shutil.copyfile(onnx_file, target)
        return
    import openvino

    model = openvino.convert_model(onnx_file)
    if calibration is not None:
        model = quantize_static_int8(model, calibration)
    openvino.save_model(model, target, compress_to_fp16=False)


def quantize_static_int8(model, calibration: list[dict[str, np.ndarray]]):
    """An OpenVINO model with int8 weights and activations, each activation's range calibrated on the batches
    (NNCF's transformer preset keeps what int8 would spoil, such as the softmax and layer norms, in floating
    point)."""
    try:
        import nncf
    except ImportError as error:
        raise ConfigError(f'format=openvino quantize=int8 needs nncf: pip install "embedlab[export]" ({error})') \
            from error
    return nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(calibration))


def write_sentence_transformers_layout(encoder: SentenceEncoder, output_dir: Path) -> None:
    """The model folder minus the torch weights: the configs sentence-transformers and Hugging Face read."""
    with tempfile.TemporaryDirectory(prefix="layout_") as scratch:
        encoder.save(Path(scratch) / "model")
        for item in (Path(scratch) / "model").iterdir():
            if item.suffix in (".safetensors", ".bin") or (output_dir / item.name).exists():
                continue
            (shutil.copytree if item.is_dir() else shutil.copyfile)(item, output_dir / item.name)


def check_export(encoder: SentenceEncoder, output_dir: Path, quantize: str) -> float:
    """The largest difference between the exported and the torch embeddings on a few texts; fp32 must agree."""
    difference = difference_from_torch(encoder, ExportedEncoder.load(output_dir, "32-true").encode(PROBE_TEXTS))
    log.info("exported %s: largest difference from the torch embeddings %.2e", output_dir, difference)
    if quantize == "none" and difference > FP32_TOLERANCE:
        raise ConfigError(f"the exported graph differs from the torch model by {difference:.2e} "
                          f"(more than {FP32_TOLERANCE}); this backbone does not export faithfully")
    return difference


def difference_from_torch(encoder: SentenceEncoder, embeddings: Tensor) -> float:
    """The largest difference between `embeddings` of PROBE_TEXTS and the torch model's."""
    return float((embeddings - encoder.encode(PROBE_TEXTS)).abs().max())
