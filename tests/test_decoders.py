"""Decoder backbones (tiny random Qwen2 and Llama): last-token pooling on left padding, the EOS a tokenizer config
asks for, causal or bidirectional attention as the checkpoint says, and training one end to end."""

import json

import pytest
import torch
from cli import run_train
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import (
    Normalize,
    Pooling,
    Transformer,
)
from tiny_decoders import HIDDEN, save_decoder

from embedlab.modeling.encoder import SentenceEncoder

ATOL = 1e-5
PROMPTS = {"query": "Instruct: find the sentence that means the same\nQuery: ", "document": ""}


def sentence_transformers_embeddings(folder, texts, **encode) -> torch.Tensor:
    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True, **encode).cpu()


def test_last_token_pooling_pads_left_and_opens_in_sentence_transformers(tiny_qwen2_dir, sentences, tmp_path):
    encoder = SentenceEncoder.from_pretrained(tiny_qwen2_dir, pooling="lasttoken", normalize=True)
    assert encoder.tokenizer.padding_side == "left"
    features = encoder.tokenize(["a dog", "the black horse runs very fast"])
    assert features["attention_mask"][0, 0] == 0 and features["attention_mask"][0, -1] == 1
    ours = encoder.encode(sentences)
    saved = encoder.save(tmp_path / "model")
    assert json.loads((saved / "tokenizer_config.json").read_text())["padding_side"] == "left"
    torch.testing.assert_close(sentence_transformers_embeddings(saved, sentences), ours, rtol=0, atol=ATOL)
    torch.testing.assert_close(SentenceEncoder.load(saved).encode(sentences), ours, rtol=0, atol=ATOL)


def test_the_last_real_token_is_found_on_either_padding_side(tiny_qwen2_dir, sentences):
    # Rotary positions make a causal decoder's real tokens see the same thing on either side of the padding.
    left = SentenceEncoder.from_pretrained(tiny_qwen2_dir, pooling="lasttoken")
    right = SentenceEncoder.from_pretrained(tiny_qwen2_dir, pooling="lasttoken")
    right.tokenizer.padding_side = "right"
    alone = torch.cat([left.encode([text]) for text in sentences])
    torch.testing.assert_close(left.encode(sentences, batch_size=4), alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(right.encode(sentences, batch_size=4), alone, rtol=1e-4, atol=1e-5)


def test_a_folder_sentence_transformers_builds_from_a_decoder_loads_with_its_prompts(tiny_qwen2_dir, sentences,
                                                                                     tmp_path):
    reference = SentenceTransformer(modules=[Transformer(tiny_qwen2_dir), Pooling(HIDDEN, "lasttoken"), Normalize()],
                                    device="cpu", prompts=PROMPTS, default_prompt_name="document")
    reference.save(str(tmp_path / "st"))
    encoder = SentenceEncoder.load(tmp_path / "st")
    assert (encoder.pooling, encoder.prompts, encoder.default_prompt_name) == ("lasttoken", PROMPTS, "document")
    torch.testing.assert_close(encoder.encode(sentences, prompt_name="query"),
                               reference.encode_query(sentences, convert_to_tensor=True), rtol=0, atol=ATOL)
    torch.testing.assert_close(encoder.encode(sentences), reference.encode(sentences, convert_to_tensor=True),
                               rtol=0, atol=ATOL)


def test_eos_is_appended_when_the_tokenizer_config_asks(tiny_llama_dir, sentences, tmp_path):
    encoder = SentenceEncoder.from_pretrained(tiny_llama_dir, pooling="lasttoken")
    eos = encoder.tokenizer.eos_token_id
    ids = encoder.tokenize(["a dog", "a man plays the guitar"])["input_ids"]
    assert (ids[:, -1] == eos).all(), "the last token of every (left-padded) row is the EOS"
    # The saved tokenizer appends it by itself, so sentence-transformers reads the same last token.
    saved = encoder.save(tmp_path / "model")
    reloaded = SentenceTransformer(str(saved), device="cpu")
    assert reloaded.tokenizer("a dog")["input_ids"][-1] == eos
    torch.testing.assert_close(sentence_transformers_embeddings(saved, sentences), encoder.encode(sentences),
                               rtol=0, atol=ATOL)


def test_without_the_flag_no_eos_is_appended(tiny_qwen2_dir):
    encoder = SentenceEncoder.from_pretrained(tiny_qwen2_dir, pooling="lasttoken")
    assert encoder.tokenize(["a dog"])["input_ids"][0, -1] != encoder.tokenizer.eos_token_id


@pytest.mark.parametrize("is_causal", [True, False], ids=["causal", "bidirectional"])
def test_attention_is_what_the_checkpoint_says(tmp_path, is_causal):
    folder = save_decoder(tmp_path / "decoder", "qwen2", is_causal=is_causal)
    encoder = SentenceEncoder.from_pretrained(folder, pooling="cls")  # the first token: it sees later ones or not
    first = encoder.encode(["a man"])
    longer = encoder.encode(["a man plays the guitar"])
    assert torch.allclose(first, longer, atol=1e-5) == is_causal
    encoder.save(tmp_path / "model")
    torch.testing.assert_close(sentence_transformers_embeddings(tmp_path / "model", ["a man plays the guitar"]),
                               longer, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_a_decoder_trains_with_mnr_and_keeps_its_prompts(tmp_path, tiny_data_dir, tiny_qwen2_dir):
    start = tmp_path / "start"
    SentenceTransformer(modules=[Transformer(tiny_qwen2_dir), Pooling(HIDDEN, "lasttoken"), Normalize()],
                        device="cpu", prompts=PROMPTS).save(str(start))
    run_dir = tmp_path / "run"
    result = run_train("loss=mnr", "data=nli", "pooling=lasttoken", "trainer.max_steps=3", "eval_every_n_steps=3",
                       run_dir=run_dir, data_dir=tiny_data_dir, backbone=str(start))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = run_dir / "model"
    settings = json.loads((saved / "config_sentence_transformers.json").read_text())
    assert settings["prompts"] == PROMPTS
    texts = ["the man plays in the park.", "a cat sleeps at home."]
    trained = SentenceEncoder.load(saved)
    assert trained.pooling == "lasttoken"
    ours = trained.encode(texts, prompt_name="query")
    torch.testing.assert_close(sentence_transformers_embeddings(saved, texts, prompt_name="query"), ours,
                               rtol=0, atol=ATOL)
    assert not torch.allclose(ours, SentenceEncoder.load(start).encode(texts, prompt_name="query"), atol=1e-4)
