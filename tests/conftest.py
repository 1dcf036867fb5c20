"""Shared fixtures: a tiny randomly initialised BERT built locally, never downloaded."""

import json
import os
import random
import string
from pathlib import Path

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
""".split()  # noqa: SIM905 -- a word list reads better as text

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


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> str:
    # Imported here, not at the top: tiny_decoders imports this module (its tokenizer learns SENTENCES).
    from tiny_decoders import save_decoder

    return save_decoder(tmp_path_factory.mktemp("tiny_qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    from tiny_decoders import save_decoder

    return save_decoder(tmp_path_factory.mktemp("tiny_llama"), "llama", add_eos_token=True)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine two threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sentences() -> list[str]:
    return list(SENTENCES)


SUBJECTS = ["the man", "a woman", "the dog", "a cat", "the boy", "a girl", "the child", "the band"]
VERBS = ["plays", "runs", "sits", "eats", "sleeps", "walks", "sings", "jumps"]
PLACES = ["in the park", "at home", "on the road", "by the river", "in the city", "at school"]


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)}."


def write_sts(path: Path, rows: int, rng: random.Random) -> None:
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.2f}\t{sentence(rng)}\t{sentence(rng)}"
             for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A few dozen rows in each file the default configs read, laid out like ../shared/data."""
    root = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    sts = root / "stsbenchmark"
    sts.mkdir()
    write_sts(sts / "sts-train.csv", 48, rng)
    write_sts(sts / "sts-dev.csv", 24, rng)
    write_sts(sts / "sts-test.csv", 24, rng)
    nli = root / "nli_ling_in_loop"
    nli.mkdir()
    for protocol in ("baseline", "LotS", "LitL"):
        rows = []
        for i in range(24):
            premise = f"{sentence(rng)[:-1]} number {i}."
            for label in ("entailment", "neutral", "contradiction"):
                rows.append({"premise": premise, "hypothesis": f"{sentence(rng)[:-1]} {protocol} {label}.",
                             "label": label})
        (nli / f"train_round1-5_{protocol}_concat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = ["entailment", "neutral", "contradiction"]
    validation = [{"premise": sentence(rng), "hypothesis": sentence(rng), "label": labels[i % 3]} for i in range(18)]
    (nli / "val_round5_base_combined.jsonl").write_text("".join(json.dumps(r) + "\n" for r in validation))
    corpus = root / "biomed_hoc_pubmed_sentences"
    corpus.mkdir()
    (corpus / "hoc_text_concat.txt").write_text("".join(f"{sentence(rng)[:-1]} in study {i}.\n" for i in range(48)))
    write_liveqa_like(root / "medical_liveqa_retrieval", rng)
    write_medquad_like(root / "medquad", rng)
    snli = root / "nli_snli_mnli_dev_test"
    snli.mkdir()
    test_rows = [f"p{i},{sentence(rng)},{sentence(rng)},{(labels + ['-'])[i % 4]}" for i in range(20)]
    (snli / "snli_1.0_test.csv").write_text("pairID,sentence1,sentence2,label\n" + "\n".join(test_rows) + "\n")
    return root


def write_liveqa_like(folder: Path, rng: random.Random, questions: int = 12, answers: int = 30) -> None:
    """A retrieval set in LiveQA-Med's files: questions with summaries, answers, graded judgements of each."""
    folder.mkdir()
    entries = "".join(f'<NLM-QUESTION qid="TQ{q}"><NLM-Summary>{sentence(rng)}</NLM-Summary></NLM-QUESTION>'
                      for q in range(1, questions + 1))
    (folder / "TREC-2017-LiveQA-Medical-Test-Questions-w-summaries.xml").write_text(
        f'<?xml version="1.0"?><Set>{entries}</Set>')
    (folder / "All-2479-Answers-retrieved-from-MedQuAD.csv").write_text(
        "AnswerID,Answer\n" + "".join(f'A{a}.txt,"{sentence(rng)} {sentence(rng)}"\n' for a in range(answers)))
    judgements = ["1-Incorrect", "2-Related", "3-Incomplete", "4-Excellent"]
    (folder / "All-qrels_LiveQAMed2017-TestQuestions_2479_Judged-Answers.txt").write_text("".join(
        f"{q} {rng.choice(judgements)} A{a}.txt\n" for q in range(1, questions + 1)
        for a in rng.sample(range(answers), 4)))


QUESTION_TYPES = ["symptoms", "causes", "treatments"]


def write_medquad_like(folder: Path, rng: random.Random, focuses: int = 16) -> None:
    """MedQuAD's files: (query, answer, answer_id, focus) training rows, several questions per focus, and a
    corpus.jsonl of every answer plus distractors."""
    folder.mkdir()
    rows, corpus = [], []
    for focus in range(focuses):
        for qtype in QUESTION_TYPES:
            answer_id = f"a{focus}-{qtype}"
            answer = f"The {qtype} of condition {focus}: {sentence(rng)} {sentence(rng)}"
            rows.append({"query": f"What are the {qtype} of condition {focus} ?", "answer": answer,
                         "answer_id": answer_id, "focus": f"condition {focus}", "qtype": qtype, "source": "tiny"})
            corpus.append({"_id": answer_id, "title": f"condition {focus}", "text": answer})
    corpus += [{"_id": f"d{i}", "title": "", "text": f"{sentence(rng)} {sentence(rng)}"} for i in range(20)]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(record) + "\n" for record in corpus))
