"""SentenceEncoder: the sentence-transformers folder layout both ways, encode order, atomic save."""

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer, models

from embedlab.errors import ConfigError
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.pooling import POOLING_MODES

ATOL = 1e-5
# Short enough that the longest fixture sentence (11 words + [CLS]/[SEP]) is truncated: both sides must agree on it.
MAX_SEQ_LENGTH = 9


def encode_with_sentence_transformers(path, sentences) -> torch.Tensor:
    model = SentenceTransformer(str(path), device="cpu")
    return model.encode(sentences, convert_to_tensor=True).cpu().float()


@pytest.mark.parametrize("pooling, normalize", [(mode, i % 2 == 1) for i, mode in enumerate(POOLING_MODES)])
def test_saved_model_opens_in_sentence_transformers(tiny_model_dir, sentences, tmp_path, pooling, normalize):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir, pooling=pooling, normalize=normalize,
                                              max_seq_length=MAX_SEQ_LENGTH)
    ours = encoder.encode(sentences)
    assert ours.shape == (len(sentences), 32)
    assert torch.isclose(ours.norm(dim=-1), torch.ones(len(sentences))).all() == normalize

    saved = encoder.save(tmp_path / "model")
    theirs = encode_with_sentence_transformers(saved, sentences)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=ATOL)
    assert SentenceTransformer(str(saved), device="cpu").max_seq_length == MAX_SEQ_LENGTH

    loaded = SentenceEncoder.load(saved)
    assert (loaded.pooling, loaded.normalize, loaded.max_seq_length) == (pooling, normalize, MAX_SEQ_LENGTH)
    torch.testing.assert_close(loaded.encode(sentences), ours, rtol=0, atol=ATOL)


def test_pooling_modes_give_different_embeddings(tiny_model_dir, sentences):
    # Guards the tests above: if every mode produced the same vectors, a mixed-up mode would go unnoticed.
    by_mode = {mode: SentenceEncoder.from_pretrained(tiny_model_dir, pooling=mode).encode(sentences)
               for mode in POOLING_MODES}
    for first, second in itertools.combinations(POOLING_MODES, 2):
        assert not torch.allclose(by_mode[first], by_mode[second], atol=1e-3), (first, second)


def test_truncation_changes_long_sentences(tiny_model_dir, sentences):
    long = [s for s in sentences if len(s.split()) + 2 > MAX_SEQ_LENGTH]
    assert long, "the fixture needs a sentence longer than MAX_SEQ_LENGTH"
    short = SentenceEncoder.from_pretrained(tiny_model_dir, max_seq_length=MAX_SEQ_LENGTH).encode(long)
    full = SentenceEncoder.from_pretrained(tiny_model_dir).encode(long)
    assert not torch.allclose(short, full, atol=1e-3)


@pytest.mark.parametrize("normalize", [False, True])
def test_save_writes_the_sentence_transformers_layout(tiny_model_dir, tmp_path, normalize):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir, pooling="max", normalize=normalize, max_seq_length=64)
    saved = Path(encoder.save(tmp_path / "model"))
    for name in ("model.safetensors", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json",
                 "config_sentence_transformers.json", "config.json"):
        assert (saved / name).is_file(), name
    modules = json.loads((saved / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling"] + (["2_Normalize"] if normalize else [])
    assert (saved / "2_Normalize").is_dir() == normalize
    pooling = json.loads((saved / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_max_tokens"] and not pooling["pooling_mode_mean_tokens"]
    assert pooling["word_embedding_dimension"] == 32
    assert json.loads((saved / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    assert json.loads((saved / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "cosine"


@pytest.mark.parametrize("pooling, normalize", [(mode, i % 2 == 0) for i, mode in enumerate(POOLING_MODES)])
def test_loads_a_folder_saved_by_sentence_transformers(tiny_model_dir, sentences, tmp_path, pooling, normalize):
    modules = [models.Transformer(tiny_model_dir, max_seq_length=MAX_SEQ_LENGTH), models.Pooling(32, pooling)]
    if normalize:
        modules.append(models.Normalize())
    reference = SentenceTransformer(modules=modules, device="cpu")
    reference.save(str(tmp_path / "st"))
    expected = reference.encode(sentences, convert_to_tensor=True).cpu()

    encoder = SentenceEncoder.from_pretrained(tmp_path / "st")
    assert (encoder.pooling, encoder.normalize, encoder.max_seq_length) == (pooling, normalize, MAX_SEQ_LENGTH)
    torch.testing.assert_close(encoder.encode(sentences), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("path", ["/nonexistent/model", "./no/such/model"])
def test_missing_path_is_a_config_error(path):
    with pytest.raises(ConfigError, match="does not exist"):
        SentenceEncoder.from_pretrained(path)


def test_encode_keeps_input_order(tiny_model_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir, pooling="mean")
    texts = [sentences[0], sentences[9], "a dog", sentences[4], "cat", sentences[6], sentences[9] + " and the cat"]
    assert len({len(t) for t in texts}) == len(texts)
    batched = encoder.encode(texts, batch_size=3)
    one_by_one = torch.cat([encoder.encode([text]) for text in texts])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=ATOL)
    # Different texts give clearly different vectors, so a permutation could not pass the comparison above.
    distances = torch.cdist(one_by_one, one_by_one) + torch.eye(len(texts)) * 1e3
    assert distances.min() > 1e-3


def test_encode_in_bf16_is_close_to_fp32_but_not_fp32(tiny_model_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    full = encoder.encode(sentences, batch_size=4)
    half = encoder.encode(sentences, batch_size=4, precision="bf16-mixed")
    assert half.dtype == torch.float32
    assert not torch.equal(half, full)
    assert F.cosine_similarity(half, full).min() > 0.99


def test_encode_rejects_an_unknown_precision(tiny_model_dir):
    with pytest.raises(ConfigError, match="precision must be one of"):
        SentenceEncoder.from_pretrained(tiny_model_dir).encode(["a dog"], precision="bf16")


def test_encode_empty_list(tiny_model_dir):
    assert SentenceEncoder.from_pretrained(tiny_model_dir).encode([]).shape == (0, 32)


def test_encode_restores_training_mode(tiny_model_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    encoder.train()
    encoder.encode(sentences[:2])
    assert encoder.training and encoder.backbone.training


def test_save_replaces_an_existing_model(tiny_model_dir, sentences, tmp_path):
    target = tmp_path / "model"
    SentenceEncoder.from_pretrained(tiny_model_dir, pooling="cls", normalize=True).save(target)
    assert (target / "2_Normalize").is_dir()

    replacement = SentenceEncoder.from_pretrained(tiny_model_dir, pooling="mean", normalize=False)
    replacement.save(target)
    # Replaced, not merged: the old model's Normalize folder is gone.
    assert not (target / "2_Normalize").exists()
    loaded = SentenceEncoder.load(target)
    assert (loaded.pooling, loaded.normalize) == ("mean", False)
    torch.testing.assert_close(loaded.encode(sentences), replacement.encode(sentences), rtol=0, atol=ATOL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "staging or retired folders were left behind"


def test_failed_save_leaves_the_old_model_intact(tiny_model_dir, sentences, tmp_path, monkeypatch):
    target = tmp_path / "model"
    old = SentenceEncoder.from_pretrained(tiny_model_dir, pooling="cls", normalize=True)
    old.save(target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    new = SentenceEncoder.from_pretrained(tiny_model_dir, pooling="mean")
    with torch.no_grad():
        for parameter in new.backbone.parameters():
            parameter.add_(1.0)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(new.backbone, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        new.save(target)

    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "the staging folder was left behind"
    loaded = SentenceEncoder.load(target)
    assert (loaded.pooling, loaded.normalize) == ("cls", True)
    torch.testing.assert_close(loaded.encode(sentences), old.encode(sentences), rtol=0, atol=ATOL)


def test_inference_copy_casts_the_weights_once_and_leaves_the_original_alone(tiny_model_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    full = encoder.encode(sentences, batch_size=4)
    half = encoder.inference_copy("bf16-true")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    assert not any(p.requires_grad for p in half.parameters())
    embeddings = half.encode(sentences, batch_size=4)
    assert embeddings.dtype == torch.float32
    assert not torch.equal(embeddings, full)
    assert F.cosine_similarity(embeddings, full).min() > 0.99
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    torch.testing.assert_close(half.encode(sentences, batch_size=4), embeddings, rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_inference_copy_gives_the_eager_copy_embeddings(tiny_model_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    eager = encoder.inference_copy("32-true").encode(sentences, batch_size=3)
    compiled = encoder.inference_copy("32-true", compile=True)
    torch.testing.assert_close(compiled.encode(sentences, batch_size=3), eager, rtol=1e-4, atol=1e-5)


def test_inference_copy_rejects_an_autocast_precision(tiny_model_dir):
    with pytest.raises(ConfigError, match="weights' precision must be one of"):
        SentenceEncoder.from_pretrained(tiny_model_dir).inference_copy("bf16-mixed")


@pytest.mark.parametrize("model_fixture, pooling", [("tiny_model_dir", "mean"), ("tiny_qwen2_dir", "lasttoken")])
def test_columns_looked_up_together_train_as_one_forward_each(request, sentences, model_fixture, pooling):
    encoder = SentenceEncoder.from_pretrained(request.getfixturevalue(model_fixture), pooling=pooling).train()
    lookups = []
    encoder.backbone.get_input_embeddings().register_forward_hook(lambda *args: lookups.append(1))
    columns = [encoder.tokenize(sentences[start:start + 3]) for start in (0, 3, 6)]
    weights = [torch.randn(3, encoder.embedding_dim, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    def embeddings_and_gradients(embed):
        encoder.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks on both paths
        embeddings = embed(columns)
        sum((embedding * weight).sum() for embedding, weight in zip(embeddings, weights)).backward()
        return embeddings, {name: p.grad for name, p in encoder.named_parameters() if p.grad is not None}

    together, together_gradients = embeddings_and_gradients(encoder.forward_columns)
    assert len(lookups) == 1
    one_by_one, gradients = embeddings_and_gradients(lambda columns: [encoder(features) for features in columns])
    assert len(lookups) == 4
    for ours, theirs in zip(together, one_by_one):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert together_gradients.keys() == gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(together_gradients[name], gradient, rtol=1e-5, atol=1e-7, msg=name)
