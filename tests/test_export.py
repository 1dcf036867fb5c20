"""Export: the tiny model to ONNX and OpenVINO, served without torch, against the torch model; and the exported
folder scored by scripts/evaluate.py through the same evaluators."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy
import pytest
import torch
from cli import ROOT, assert_one_line_error
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import (
    Dense,
    Normalize,
    Pooling,
    Router,
    Transformer,
)

from embedlab.errors import ConfigError
from embedlab.evaluation.loaders import load_scored_pairs
from embedlab.evaluation.sts import STSEvaluator
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling import export
from embedlab.modeling.export import export_encoder
from embedlab.modeling.exported import ExportedEncoder, resolve_streams
from embedlab.modeling.onnx_fusion import fuse_for_onnxruntime

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["a man plays the guitar", "the dog runs", "two children play with a ball in the big green park", "a"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def prompted_model(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model normalised, truncated and with a query prompt: all of it must survive the export."""
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir, normalize=True, truncate_dim=24)
    encoder.prompts = {"query": "query: "}
    return str(encoder.save(tmp_path_factory.mktemp("prompted") / "model"))


@pytest.fixture(scope="module")
def onnx_export(prompted_model, tmp_path_factory):
    return export_encoder(prompted_model, tmp_path_factory.mktemp("export") / "onnx")


def test_the_onnx_graph_gives_the_torch_embeddings(prompted_model, onnx_export):
    torch_encoder = SentenceEncoder.load(prompted_model)
    exported = ExportedEncoder.load(onnx_export)
    for prompt in (None, "query"):
        expected = torch_encoder.encode(TEXTS, batch_size=3, prompt_name=prompt)
        served = exported.encode(TEXTS, batch_size=3, prompt_name=prompt)
        assert served.shape == expected.shape == (len(TEXTS), 24)
        torch.testing.assert_close(served, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(exported.encode(TEXTS[:1], prompt_name="query"), exported.encode(TEXTS[:1]))


def test_batches_served_side_by_side_come_back_in_the_order_of_the_texts(prompted_model, onnx_export):
    expected = SentenceEncoder.load(prompted_model).encode(TEXTS).repeat(3, 1)
    served = ExportedEncoder.load(onnx_export, streams=2).encode(TEXTS * 3, batch_size=1)
    torch.testing.assert_close(served, expected, atol=1e-4, rtol=0)


def test_auto_streams_are_two_where_torch_has_two_threads_or_more(monkeypatch):
    for threads, streams in ((1, 1), (2, 2), (16, 2)):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        assert resolve_streams("auto") == streams
    assert resolve_streams(3) == 3
    with pytest.raises(ConfigError, match="streams must be auto or at least 1"):
        resolve_streams(0)


def test_the_graph_takes_ids_and_mask_and_gives_sentence_embeddings(onnx_export):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_export / "sentence_embedding.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["sentence_embedding"]
    # The sentence-transformers layout beside it: a token-embedding graph and the module configs.
    tokens = onnxruntime.InferenceSession(str(onnx_export / "onnx" / "model.onnx"),
                                          providers=["CPUExecutionProvider"])
    assert [o.name for o in tokens.get_outputs()] == ["last_hidden_state"]
    modules = json.loads((onnx_export / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert (onnx_export / "config.json").exists() and not list(onnx_export.glob("*.safetensors"))


OPENVINO_CHECK = """
import json, sys
import torch
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling import export
from embedlab.modeling.export import export_encoder
from embedlab.modeling.exported import ExportedEncoder
from embedlab.modeling.onnx_fusion import fuse_for_onnxruntime
model, folder, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
folder = export_encoder(model, folder, format="openvino", quantize="int8", calibration_texts=json.loads(sys.argv[4]))
served = ExportedEncoder.load(folder).encode(texts)
expected = SentenceEncoder.load(model).encode(texts)
graphs = [folder / "sentence_embedding.xml", folder / "openvino" / "openvino_model.xml"]
print(json.dumps({"files": all(graph.exists() for graph in graphs),
                  "quantised": all('type="FakeQuantize"' in graph.read_text() for graph in graphs),
                  "min_cosine": torch.nn.functional.cosine_similarity(served, expected).min().item(),
                  "equal": torch.allclose(served, expected, atol=1e-6)}))
"""


def openvino_check(script: str, model: str, folder, *arguments: str) -> dict:
    """What `script` prints last, run in its own process and never imported here: once imported, OpenVINO breaks
    pytest's capture of the output of the in-process runs of later tests in the same worker."""
    result = subprocess.run([sys.executable, "-c", script, model, str(folder), json.dumps(TEXTS), *arguments],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed")
def test_openvino_int8_is_calibrated_static_int8_close_to_fp32(prompted_model, tmp_path, sentences):
    check = openvino_check(OPENVINO_CHECK, prompted_model, tmp_path / "openvino_int8", json.dumps(sentences))
    assert check["files"] and check["quantised"], check  # both graphs hold int8 quantisation of their activations
    assert check["min_cosine"] > 0.99 and not check["equal"], check


def test_openvino_int8_without_calibration_texts_is_one_line_before_the_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="calibrates the activations' ranges on sample texts, and none were given"):
        export_encoder("/no/such/model", tmp_path / "out", format="openvino", quantize="int8")


OPENVINO_BF16_CHECK = """
import json, sys
import torch
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.export import export_encoder
from embedlab.modeling.exported import ExportedEncoder
from embedlab.modeling.onnx_fusion import fuse_for_onnxruntime
model, folder, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
folder = export_encoder(model, folder, format="openvino")
expected = SentenceEncoder.load(model).encode(texts)
f32, bf16 = (ExportedEncoder.load(folder, precision).encode(texts) for precision in ("32-true", "bf16-true"))
side_by_side = ExportedEncoder.load(folder, "32-true", streams=2).encode(texts * 3, batch_size=1)
print(json.dumps({"f32_difference": (f32 - expected).abs().max().item(),
                  "streams_difference": (side_by_side - expected.repeat(3, 1)).abs().max().item(),
                  "bf16_difference": (bf16 - expected).abs().max().item(),
                  "bf16_min_cosine": torch.nn.functional.cosine_similarity(bf16, expected).min().item()}))
"""


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_openvino_serves_in_bf16_when_asked_and_in_fp32_otherwise(prompted_model, tmp_path):
    check = openvino_check(OPENVINO_BF16_CHECK, prompted_model, tmp_path / "openvino")
    assert check["f32_difference"] < 1e-5 and check["streams_difference"] < 1e-5, check
    assert check["bf16_difference"] > 10 * check["f32_difference"] and check["bf16_min_cosine"] > 0.99, check


def test_an_onnx_export_serves_only_as_exported(onnx_export):
    with pytest.raises(ConfigError, match="an ONNX export serves in the precision it was exported in"):
        ExportedEncoder.load(onnx_export, precision="bf16-true")


def op_types(graph) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(graph).graph.node}


def test_the_onnx_graph_is_fused_and_int8_reaches_the_attention(prompted_model, onnx_export, tmp_path):
    assert {"Attention", "SkipLayerNormalization"} <= op_types(onnx_export / "sentence_embedding.onnx")
    int8 = export_encoder(prompted_model, tmp_path / "onnx_int8", quantize="int8")
    assert {"QAttention", "MatMulInteger"} <= op_types(int8 / "sentence_embedding.onnx")
    served, expected = ExportedEncoder.load(int8).encode(TEXTS), SentenceEncoder.load(prompted_model).encode(TEXTS)
    assert torch.nn.functional.cosine_similarity(served, expected).min() > 0.99
    assert not torch.allclose(served, expected, atol=1e-6)


def scaled_fusion(source, target):
    """The real fusion with its output scaled: a fused graph that no longer gives the model's embeddings."""
    import onnx

    attentions = fuse_for_onnxruntime(source, target)
    graph = onnx.load(target)
    output = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = [f"{name}_unscaled" if name == output else name for name in node.output]
    graph.graph.initializer.append(onnx.numpy_helper.from_array(numpy.array(1.5, dtype=numpy.float32), "scale"))
    graph.graph.node.append(onnx.helper.make_node("Mul", [f"{output}_unscaled", "scale"], [output]))
    onnx.save(graph, target)
    return attentions


def failed_fusion(source, target):
    raise RuntimeError("no pattern matched")


@pytest.mark.parametrize("fusion", [scaled_fusion, failed_fusion])
def test_a_fusion_that_fails_or_changes_the_embeddings_leaves_the_traced_graph(prompted_model, tmp_path, monkeypatch,
                                                                              fusion):
    monkeypatch.setattr(export, "fuse_for_onnxruntime", fusion)
    folder = export_encoder(prompted_model, tmp_path / "onnx")
    assert "Attention" not in op_types(folder / "sentence_embedding.onnx")
    torch.testing.assert_close(ExportedEncoder.load(folder).encode(TEXTS),
                               SentenceEncoder.load(prompted_model).encode(TEXTS), atol=1e-4, rtol=0)


def test_the_export_scores_as_the_torch_model_through_the_evaluators(prompted_model, onnx_export, tiny_data_dir,
                                                                        tmp_path):
    source = {"local": {"path": str(tiny_data_dir / "stsbenchmark" / "sts-test.csv"), "delimiter": "\t",
                        "quoting": "none", "header": False, "columns": {"sentence1": 5, "sentence2": 6, "score": 4},
                        "score_range": [0, 5]}}
    evaluator = STSEvaluator("test/stsb", load_scored_pairs(source))
    expected = evaluator(SentenceEncoder.load(prompted_model))["test/stsb/spearman_cosine"]
    command = [sys.executable, "scripts/evaluate.py", f"model_path={onnx_export}", f"paths.data_dir={tiny_data_dir}",
               "evaluation=[stsb,latency]", "evaluation.latency.repeats=1",
               "evaluation.latency.single_queries=3", "evaluation.latency.texts.count=8",
               "compare_sentence_transformers=false", f"hydra.run.dir={tmp_path}", "threads=1"]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test/stsb/spearman_cosine"] == pytest.approx(expected, abs=1e-3)
    assert results["latency/sentences_per_second@32"] > 0


def test_an_exported_model_refuses_torch_settings(onnx_export, tiny_data_dir, tmp_path):
    command = [sys.executable, "scripts/evaluate.py", f"model_path={onnx_export}", f"paths.data_dir={tiny_data_dir}",
               "evaluation=[stsb]", "compile=true", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert_one_line_error(result, "is an exported model")


def test_an_unknown_format_is_one_line_before_anything_loads(tmp_path):
    command = [sys.executable, "scripts/export.py", "model_path=/no/such/model", "format=tflite",
               f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert_one_line_error(result, "format must be one of onnx, openvino, got 'tflite'")


def test_loading_a_folder_that_is_no_export_says_so(tiny_model_dir):
    with pytest.raises(ConfigError, match="not an exported model"):
        ExportedEncoder.load(tiny_model_dir)


def test_every_module_after_the_backbone_is_in_the_graph(tiny_model_dir, tmp_path):
    SentenceTransformer(modules=[Transformer(tiny_model_dir), Pooling(32, "cls"), Dense(32, 8), Normalize()],
                        device="cpu").save(str(tmp_path / "model"))
    served = ExportedEncoder.load(export_encoder(str(tmp_path / "model"), tmp_path / "onnx")).encode(TEXTS)
    torch.testing.assert_close(served, SentenceEncoder.load(tmp_path / "model").encode(TEXTS), rtol=0, atol=1e-5)
    assert served.shape == (len(TEXTS), 8)


def test_a_model_without_one_backbone_is_refused_in_one_line(tiny_model_dir, tmp_path):
    routes = [[Transformer(tiny_model_dir), Pooling(32)] for _ in range(2)]
    SentenceTransformer(modules=[Router.for_query_document(*routes)], device="cpu").save(str(tmp_path / "model"))
    with pytest.raises(ConfigError, match="this model starts with a Router, not a transformer backbone"):
        export_encoder(str(tmp_path / "model"), tmp_path / "onnx")
