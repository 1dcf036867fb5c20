"""Shared fixtures: a tiny randomly initialised BERT built locally, never downloaded."""

import os
import string

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

# No test may reach the Hugging Face hub: a missing local file must fail here, not download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

WORDS = """
the a an and or but of to in on at by for with from is are was were be has have had do does not no yes
this that these those it he she they we you i his her their my your man men woman women child children boy
girl dog dogs cat cats horse bird person people guitar piano music song ball game food water car bike
street park house city beach tree field plays play playing runs run running walks walk eats eat sits
sit rides ride reads read sings sing sleeps jumps swims big small old young happy sad red blue green
black white two three some very fast slow outside inside
""".split()

SENTENCES = [
    "a man plays the guitar",
    "a woman plays the piano",
    "the dog runs in the park",
    "a cat sleeps in the house",
    "two children play with a ball",
    "the young boy rides a red bike",
    "an old man reads in the park",
    "a girl sings a happy song",
    "people walk on the street",
    "the black horse runs very fast in a big green field",
    "a bird sits in the tree",
    "the woman eats food outside",
]


def build_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list(string.ascii_lowercase)
    pieces = [f"##{c}" for c in letters + list(string.digits)]
    vocab = specials + letters + list(string.digits) + list(".,!?;:'\"-()") + pieces
    return vocab + [w for w in dict.fromkeys(WORDS) if w not in vocab]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny BERT (hidden 32, 2 layers) and its WordPiece tokenizer, saved with save_pretrained; returns the path."""
    root = tmp_path_factory.mktemp("tiny_bert")
    vocab = build_vocab()
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (it silently ignores the old `vocab_file` keyword).
    tokenizer = BertTokenizerFast(vocab=str(vocab_file))
    assert len(tokenizer) == len(vocab), "the tokenizer did not pick up the vocabulary"
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=37, max_position_embeddings=128))
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return str(model_dir)


@pytest.fixture
def sentences() -> list[str]:
    return list(SENTENCES)
