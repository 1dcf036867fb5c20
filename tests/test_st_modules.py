"""Every sentence-transformers module type embedlab reads and writes, both ways: a folder sentence-transformers
writes loads here with the same embeddings, and the folder embedlab writes back loads in SentenceTransformer with
the same embeddings."""

import json
import re

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import (
    Dense,
    LayerNorm,
    Normalize,
    Pooling,
    Router,
    StaticEmbedding,
    Transformer,
)
from torch import nn
from transformers import AutoTokenizer

from embedlab.errors import ConfigError
from embedlab.modeling import modules
from embedlab.modeling.encoder import SentenceEncoder

ATOL = 1e-5
DIM = 32


def assert_same_embeddings(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours, theirs.cpu().float(), rtol=0, atol=ATOL)


def round_trip(reference: SentenceTransformer, folder, sentences) -> SentenceEncoder:
    """Save `reference`, load it here, compare; save ours, load it in sentence-transformers, compare again."""
    reference.save(str(folder / "theirs"))
    expected = reference.encode(sentences, convert_to_tensor=True)
    encoder = SentenceEncoder.load(folder / "theirs")
    assert_same_embeddings(encoder.encode(sentences), expected)
    encoder.save(folder / "ours")
    reloaded = SentenceTransformer(str(folder / "ours"), device="cpu")
    assert_same_embeddings(encoder.encode(sentences), reloaded.encode(sentences, convert_to_tensor=True))
    return encoder


def transformer(tiny_model_dir) -> Transformer:
    return Transformer(tiny_model_dir, max_seq_length=16)


@pytest.mark.parametrize("activation, residual", [(nn.Tanh(), False), (nn.Identity(), True), (nn.GELU(), True)],
                         ids=["tanh", "identity_residual_projected", "gelu_residual"])
def test_dense_round_trips(tiny_model_dir, sentences, tmp_path, activation, residual):
    out = DIM if isinstance(activation, nn.GELU) else 16  # same size: the residual adds the input unprojected
    torch.manual_seed(1)
    reference = SentenceTransformer(modules=[transformer(tiny_model_dir), Pooling(DIM, "mean"),
                                             Dense(DIM, out, activation_function=activation, use_residual=residual),
                                             Normalize()], device="cpu")
    encoder = round_trip(reference, tmp_path, sentences)
    assert encoder.embedding_dim == out and encoder.normalize
    assert [type(m).__name__ for m in encoder.pipeline] == ["Backbone", "Pooling", "Dense", "Normalize"]


def test_dense_before_pooling_transforms_the_token_embeddings(tiny_model_dir, sentences, tmp_path):
    reference = SentenceTransformer(modules=[transformer(tiny_model_dir),
                                             Dense(DIM, 8, module_input_name="token_embeddings"), Pooling(8, "max")],
                                    device="cpu")
    assert round_trip(reference, tmp_path, sentences).embedding_dim == 8


def test_static_embedding_round_trips(tiny_model_dir, sentences, tmp_path):
    torch.manual_seed(2)
    static = StaticEmbedding(AutoTokenizer.from_pretrained(tiny_model_dir), embedding_dim=12)
    encoder = round_trip(SentenceTransformer(modules=[static], device="cpu"), tmp_path, sentences)
    assert isinstance(encoder.input_module, modules.StaticEmbedding) and encoder.embedding_dim == 12


def query_document_router(tiny_model_dir) -> Router:
    """A static query route and a transformer document route, as sentence-transformers' docs build one."""
    torch.manual_seed(3)
    static = StaticEmbedding(AutoTokenizer.from_pretrained(tiny_model_dir), embedding_dim=16)
    return Router.for_query_document(query_modules=[static],
                                     document_modules=[transformer(tiny_model_dir), Pooling(DIM, "cls"),
                                                       Dense(DIM, 16)])


def test_router_routes_queries_and_documents_as_sentence_transformers_does(tiny_model_dir, sentences, tmp_path):
    reference = SentenceTransformer(modules=[query_document_router(tiny_model_dir), Normalize()], device="cpu",
                                    prompts={"query": "query: ", "document": "passage: "})
    reference.save(str(tmp_path / "theirs"))
    encoder = SentenceEncoder.load(tmp_path / "theirs")
    assert encoder.routed and encoder.input_module.default_route == "document"

    def compare(model: SentenceTransformer):
        assert_same_embeddings(encoder.encode(sentences, prompt_name="query"),
                               model.encode_query(sentences, convert_to_tensor=True))
        assert_same_embeddings(encoder.encode(sentences, prompt_name="document"),
                               model.encode_document(sentences, convert_to_tensor=True))
        # No task: the default route, with no prompt.
        assert_same_embeddings(encoder.encode(sentences), model.encode(sentences, convert_to_tensor=True))

    compare(reference)
    queries, documents = encoder.encode(sentences, prompt_name="query"), encoder.encode(sentences, prompt_name="document")
    assert not torch.allclose(queries, documents, atol=1e-2), "both routes gave the same vectors"
    encoder.save(tmp_path / "ours")
    compare(SentenceTransformer(str(tmp_path / "ours"), device="cpu"))


def test_router_with_route_mappings_and_a_shared_module(tiny_model_dir, sentences, tmp_path):
    shared_pooling = Pooling(DIM, "mean")
    torch.manual_seed(4)
    router = Router({"short": [transformer(tiny_model_dir), shared_pooling],
                     "long": [Transformer(tiny_model_dir, max_seq_length=64), shared_pooling, Dense(DIM, DIM)]},
                    default_route="short", route_mappings={("query", None): "short", ("document", "text"): "long"})
    reference = SentenceTransformer(modules=[router], device="cpu")
    reference.save(str(tmp_path / "theirs"))
    encoder = SentenceEncoder.load(tmp_path / "theirs")
    routes = encoder.input_module.routes
    assert routes["short"][1] is routes["long"][1], "the shared Pooling was read twice"
    assert_same_embeddings(encoder.encode(sentences, prompt_name="document"),
                           reference.encode_document(sentences, convert_to_tensor=True))
    encoder.save(tmp_path / "ours")
    router_config = json.loads((tmp_path / "ours" / "router_config.json").read_text())
    assert sum(name.endswith("Pooling") for name in router_config["types"]) == 1
    assert_same_embeddings(encoder.encode(sentences, prompt_name="query"),
                           SentenceTransformer(str(tmp_path / "ours"), device="cpu").encode_query(
                               sentences, convert_to_tensor=True))


def test_a_task_without_a_route_is_a_config_error(tiny_model_dir, tmp_path):
    router = Router({"main": [transformer(tiny_model_dir), Pooling(DIM)]}, allow_empty_key=False)
    SentenceTransformer(modules=[router], device="cpu").save(str(tmp_path / "model"))
    with pytest.raises(ConfigError, match="no route for task 'query'"):
        SentenceEncoder.load(tmp_path / "model").encode(["a dog"], prompt_name="query")


def test_an_unsupported_module_stops_the_load_naming_it(tiny_model_dir, tmp_path):
    reference = SentenceTransformer(modules=[transformer(tiny_model_dir), Pooling(DIM), LayerNorm(DIM)],
                                    device="cpu")
    reference.save(str(tmp_path / "model"))
    with pytest.raises(ConfigError, match=r"module type '.*LayerNorm' is not supported"):
        SentenceEncoder.load(tmp_path / "model")


def test_an_activation_outside_torch_is_refused(tiny_model_dir, tmp_path):
    SentenceTransformer(modules=[transformer(tiny_model_dir), Pooling(DIM), Dense(DIM, 8)],
                        device="cpu").save(str(tmp_path / "model"))
    config_file = tmp_path / "model" / "2_Dense" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "activation_function": "os.system"}))
    with pytest.raises(ConfigError, match="activation_function 'os.system' is not a torch.nn module"):
        SentenceEncoder.load(tmp_path / "model")


@pytest.mark.parametrize("entries, expected", [
    ({"0": {"type": "Transformer"}}, "holds a JSON dict, not the list expected there"),
    (["Transformer", "Pooling"], "not a sentence-transformers module list (a list of objects with a type)"),
    ([{"type": "Transformer", "path": ""}, {"type": "Pooling", "path": "../elsewhere"}],
     "module folder '../elsewhere' lies outside the model"),
])
def test_a_modules_json_that_is_no_module_list_is_one_line(tiny_model_dir, tmp_path, entries, expected):
    SentenceEncoder.load(tiny_model_dir).save(tmp_path / "model")
    (tmp_path / "model" / "modules.json").write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match=re.escape(expected)):
        SentenceEncoder.load(tmp_path / "model")
