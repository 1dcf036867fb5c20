import json

import pytest
import torch
from cli import assert_one_line_error, run_train, train_here

from embedlab.modeling.cross_encoder import CrossEncoder

PAIRS = [("a man plays the guitar", "a woman plays the piano"),
         ("the dog runs", "a cat sleeps in the house and the dog runs very fast in the park"),
         ("two children play with a ball", "two children play"),
         ("a bird sits in the tree", "the woman eats food outside")]


def sentence_transformers_scores(directory, pairs):
    from sentence_transformers.cross_encoder import CrossEncoder as Reference

    return Reference(str(directory), device="cpu").predict(pairs, convert_to_tensor=True).cpu()


@pytest.mark.parametrize("num_labels", [1, 3])
def test_saved_cross_encoder_scores_the_same_in_sentence_transformers(tmp_path, tiny_model_dir, num_labels):
    torch.manual_seed(0)
    # A short maximum length truncates the long pair, so both sides must truncate alike.
    model = CrossEncoder.from_pretrained(tiny_model_dir, num_labels=num_labels, max_seq_length=12)
    torch.nn.init.normal_(model.model.classifier.weight, std=1.0)
    model.save(tmp_path / "ce")

    ours = model.predict(PAIRS, batch_size=3)
    assert ours.shape == ((len(PAIRS),) if num_labels == 1 else (len(PAIRS), num_labels))
    torch.testing.assert_close(sentence_transformers_scores(tmp_path / "ce", PAIRS), ours, atol=1e-5, rtol=1e-4)

    reloaded = CrossEncoder.load(tmp_path / "ce")
    assert reloaded.num_labels == num_labels and reloaded.max_seq_length == 12
    torch.testing.assert_close(reloaded.predict(PAIRS), ours)


def test_predict_keeps_input_order_and_rank_sorts_best_first(tiny_model_dir):
    torch.manual_seed(0)
    model = CrossEncoder.from_pretrained(tiny_model_dir, num_labels=1)
    torch.nn.init.normal_(model.model.classifier.weight, std=1.0)
    together = model.predict(PAIRS, batch_size=2)
    one_by_one = torch.cat([model.predict([pair]) for pair in PAIRS])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)

    documents = [second for _, second in PAIRS]
    ranking = model.rank("a man plays", documents, top_k=3)
    scores = model.predict([("a man plays", document) for document in documents])
    assert [index for index, _ in ranking] == torch.argsort(scores, descending=True)[:3].tolist()
    assert ranking[0][1] >= ranking[1][1] >= ranking[2][1]


def test_rank_needs_a_single_score(tiny_model_dir):
    model = CrossEncoder.from_pretrained(tiny_model_dir, num_labels=3)
    with pytest.raises(ValueError, match="one output"):
        model.rank("a query", ["a document"])


@pytest.mark.slow
def test_cross_encoder_stsb_run_trains_saves_and_loads_in_sentence_transformers(tmp_path, tiny_data_dir,
                                                                               tiny_model_dir):
    run_dir = tmp_path / "run"
    result = run_train("experiment=cross_encoder_stsb", "trainer.max_epochs=1", "eval_every_n_steps=3",
                       run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert {"dev/stsb/spearman", "test/stsb/spearman", "test/stsb/pearson"} <= set(results)

    trained = CrossEncoder.load(run_dir / "model")
    torch.testing.assert_close(sentence_transformers_scores(run_dir / "model", PAIRS), trained.predict(PAIRS),
                               atol=1e-5, rtol=1e-4)
    untrained = CrossEncoder.from_pretrained(tiny_model_dir, num_labels=1)
    assert not torch.equal(trained.model.bert.embeddings.word_embeddings.weight,
                           untrained.model.bert.embeddings.word_embeddings.weight)


@pytest.mark.slow
def test_nli_classification_run_reports_accuracy_and_f1(tmp_path, tiny_data_dir, tiny_model_dir):
    run_dir = tmp_path / "run"
    result = run_train("experiment=cross_encoder_nli", "eval_every_n_steps=3",
                       run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("dev/nli/accuracy", "dev/nli/f1", "test/nli/accuracy", "test/nli/f1"):
        assert 0 <= results[key] <= 1
    assert CrossEncoder.load(run_dir / "model").num_labels == 3


def test_embedding_loss_on_a_cross_encoder_fails_at_start_up(tmp_path, tiny_data_dir, capfd, monkeypatch):
    result = train_here(capfd, monkeypatch, "model=cross_encoder", "loss=mnr", run_dir=tmp_path / "run",
                        data_dir=tiny_data_dir, backbone="/no/such/model")
    assert_one_line_error(result, "loss 'mnr' consumes embeddings but model 'cross_encoder' produces pair_logits")
