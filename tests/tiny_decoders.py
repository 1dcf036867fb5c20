"""Tiny random decoders (Qwen2, Llama) with a byte-level BPE tokenizer trained on the fly: never downloaded.
conftest.py's tiny_qwen2_dir and tiny_llama_dir fixtures save them."""

import json
from pathlib import Path

import torch
from conftest import SENTENCES, WORDS
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Model,
)

EOS = "<|endoftext|>"
HIDDEN = 32


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-style byte-level BPE over the test vocabulary: no padding token, EOS only as a special token."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([*SENTENCES, " ".join(WORDS)], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS)


def save_decoder(folder: Path, family: str, is_causal: bool = True, add_eos_token: bool = False) -> str:
    """A two-layer random decoder of `family` ("qwen2" or "llama") and its tokenizer, saved as a checkpoint.

    `add_eos_token` writes that flag into tokenizer_config.json the way e5-mistral's carries it, which transformers
    5 then ignores beside tokenizer.json."""
    tokenizer = byte_level_tokenizer()
    config_class, model_class = {"qwen2": (Qwen2Config, Qwen2Model), "llama": (LlamaConfig, LlamaModel)}[family]
    torch.manual_seed(0)
    config = config_class(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          eos_token_id=tokenizer.eos_token_id, is_causal=is_causal)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if add_eos_token:
        config_file = folder / "tokenizer_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "add_eos_token": True}))
    return str(folder)
