"""The unlabelled corpus (data=corpus): reading lines or splitting documents, length filters, deduplication, and bad input."""

import pytest
from cli import assert_one_line_error, train_here
from fakes import trainer_for_data
from hydra import compose, initialize_config_dir
from lightning.fabric.utilities.data import _set_sampler_epoch

from embedlab.assembly import run_training
from embedlab.config import CONF_DIR
from embedlab.data.corpus import (
    CorpusDataModule,
    filter_sentences,
    read_corpus,
    split_sentences,
)
from embedlab.data.noise import DenoisingCollator
from embedlab.errors import ConfigError, DataError
from embedlab.losses import ReconstructionLoss


def domain_data(path, **settings) -> CorpusDataModule:
    data = CorpusDataModule(name="corpus", path=str(path), **settings)
    data.fit_loss("tsdae", ReconstructionLoss)
    return data


def test_one_sentence_per_line_is_read_whitespace_normalised(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("GHS-R is found in  various tissues .\n\n  Here we show that it binds ghrelin .\r\n")
    assert read_corpus(corpus) == ["GHS-R is found in various tissues .", "Here we show that it binds ghrelin ."]


def test_documents_are_split_into_sentences_by_a_real_splitter(tmp_path):
    text = ("Mutations in BRCA1 (e.g. c.68_69delAG) raise the risk. Dr. Smith et al. found a 2.5-fold\nincrease, "
            "i.e. a large effect.\n\nThe p53 pathway was not affected.")
    assert split_sentences(text) == ["Mutations in BRCA1 (e.g. c.68_69delAG) raise the risk.",
                                     "Dr. Smith et al. found a 2.5-fold increase, i.e. a large effect.",
                                     "The p53 pathway was not affected."]
    folder = tmp_path / "abstracts"
    folder.mkdir()
    (folder / "2.txt").write_text("Second abstract. It has two sentences.")
    (folder / "1.txt").write_text("First abstract here.")
    assert read_corpus(folder, layout="documents") == ["First abstract here.", "Second abstract.",
                                                       "It has two sentences."]


def test_length_filters_and_deduplication():
    sentences = ["one two", "one two three", "one two three four five", "one two three", "a b c d e f g"]
    assert filter_sentences(sentences, 3, 5, deduplicate=True) == ["one two three", "one two three four five"]
    assert filter_sentences(sentences, 3, 5, deduplicate=False) == ["one two three", "one two three four five",
                                                                    "one two three"]
    assert filter_sentences(sentences, 1, None, deduplicate=True) == ["one two", "one two three",
                                                                      "one two three four five", "a b c d e f g"]


def test_a_line_of_ten_thousand_words_is_skipped_not_fed_to_the_model(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a short sentence here\n" + " ".join(["word"] * 10_000) + "\n")
    rows, _ = domain_data(corpus).load_train("sentences")
    assert rows == [{"text": "a short sentence here"}]
    # With the filter off, the tokenizer truncates it to the encoder's length (see test_tsdae for the collator).
    rows, _ = domain_data(corpus, max_words=None).load_train("sentences")
    assert len(rows) == 2


def test_overlong_text_is_truncated_by_the_collator(tiny_model_dir):
    from embedlab.modeling.encoder import SentenceEncoder

    encoder = SentenceEncoder.load(tiny_model_dir, max_seq_length=32)
    batch = DenoisingCollator(encoder.tokenize, 0.6, 0)([{"text": " ".join(["dog"] * 10_000), "epoch": 0,
                                                          "index": 0}])
    assert batch["features"]["text"]["input_ids"].shape == (1, 32)
    assert batch["features"]["noisy"]["input_ids"].shape == (1, 32)


def test_rows_carry_their_epoch_and_index_for_the_noise(tmp_path, tiny_model_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"sentence number {i} is here\n" for i in range(10)))
    data = domain_data(corpus, batch_size=4, seed=3)
    data.trainer = trainer_for_data()
    data.setup("fit")
    loader = data.train_dataloader()
    first = [row for batch in loader for row in batch]
    assert sorted(row["index"] for row in first) == list(range(10)) and {row["epoch"] for row in first} == {0}
    assert all(row["text"] == f"sentence number {row['index']} is here" for row in first)
    _set_sampler_epoch(loader, 1)  # what Lightning's fit loop calls at the start of each epoch
    second = [row for batch in loader for row in batch]
    assert {row["epoch"] for row in second} == {1}
    assert [row["index"] for row in second] != [row["index"] for row in first]


@pytest.mark.parametrize("content, expected", [
    (None, "no file or folder at"),
    (b"", "no training rows in"),
    (b"caf\xe9 au lait est bon\n", "not UTF-8 text (byte 0xe9 at offset 3)"),
    (b"too short\n", "none of the 1 sentences"),
])
def test_bad_corpus_stops_with_one_clear_error(tmp_path, content, expected):
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_bytes(content)
    data = domain_data(corpus, min_words=4)
    data.trainer = trainer_for_data()
    with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        data.setup("fit")


def test_non_utf8_corpus_is_one_line_from_the_command_line(tmp_path, tiny_data_dir, tiny_model_dir, capfd,
                                                           monkeypatch):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("les résultats sont très bons ici\n".encode("latin-1"))
    result = train_here(capfd, monkeypatch, "model=tsdae", "data=corpus", f"data.path={corpus}",
                        run_dir=tmp_path / "run", data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert_one_line_error(result, f"{corpus}: not UTF-8 text")


def test_corpus_data_with_a_bi_encoder_fails_at_start_up(tmp_path):
    # data=corpus selects the reconstruction loss, which only model=tsdae feeds; the backbone is never loaded.
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=corpus", "backbone.name_or_path=/no/such/model",
                                          f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="consumes token_logits but model .* produces embeddings"):
        run_training(cfg)
