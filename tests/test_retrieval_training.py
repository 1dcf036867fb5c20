"""Retrieval-first training: the dev split carved by group, the question-answer retrieval set and its sub-corpus,
prompts from training to the saved folder and back, and several sources in one run."""

import json
import random

import pytest
import torch
from cli import run_train

from embedlab.data.mixture import MixedBatches
from embedlab.data.sampler import ShardedBatchSampler
from embedlab.data.sources import Holdout, load_source
from embedlab.evaluation.loaders import load_qa_retrieval
from embedlab.evaluation.significance import paired_test
from embedlab.modeling.encoder import SentenceEncoder


def medquad_source(data_dir, fraction: float = 0.25, columns=None) -> dict:
    return {"local": {"path": str(data_dir / "medquad" / "train.jsonl"),
                      "columns": columns or {"anchor": "query", "positive": "answer", "focus": "focus"}},
            "holdout": {"field": "focus", "fraction": fraction, "seed": 13}}


def test_the_holdout_splits_by_group_and_no_group_is_on_both_sides(tiny_data_dir):
    every, _ = load_source(medquad_source(tiny_data_dir), "medquad")
    train, _ = load_source(medquad_source(tiny_data_dir), "medquad", side="train")
    held, origin = load_source(medquad_source(tiny_data_dir), "medquad", side="holdout")
    assert len(train) + len(held) == len(every) and held and train
    assert not {row["focus"] for row in train} & {row["focus"] for row in held}
    assert "holdout side of the holdout by focus" in origin
    # A group's side depends on its name alone: not on the other rows, their order or their number.
    holdout = Holdout("focus", 0.25, 13)
    assert {row["focus"] for row in held} == {f"condition {i}" for i in range(16) if holdout.holds(f"condition {i}")}
    shuffled = random.Random(1).sample([f"condition {i}" for i in range(1000)], 1000)
    assert 0.2 < sum(map(holdout.holds, shuffled)) / 1000 < 0.3
    assert [g for g in shuffled if holdout.holds(g)] == [g for g in shuffled if Holdout("focus", 0.25, 13).holds(g)]
    assert Holdout("focus", 0.25, 14).holds != holdout.holds


def test_the_retrieval_set_asks_each_held_out_question_for_its_answers(tiny_data_dir):
    pairs = medquad_source(tiny_data_dir, columns={"query": "query", "answer_id": "answer_id"})
    corpus = str(tiny_data_dir / "medquad" / "corpus.jsonl")
    full = load_qa_retrieval(pairs, corpus)
    held = load_source(medquad_source(tiny_data_dir, columns={"query": "query", "answer_id": "answer_id"}),
                       "medquad", side="holdout")[0]
    assert sorted(full.queries.values()) == sorted(row["query"] for row in held)
    assert len(full.corpus) == 16 * 3 + 20
    for query_id, judged in full.qrels.items():
        assert list(judged) == [next(row["answer_id"] for row in held if row["query"] == full.queries[query_id])]
    sub = load_qa_retrieval(pairs, corpus, distractors=5)
    relevant = {doc for judged in full.qrels.values() for doc in judged}
    assert set(sub.corpus) >= relevant and len(sub.corpus) == len(relevant) + 5
    assert sub.corpus.keys() == load_qa_retrieval(pairs, corpus, distractors=5).corpus.keys()


def test_a_row_whose_answer_id_names_another_answer_is_judged_by_its_answer_text(tmp_path, tiny_data_dir, caplog):
    rows = [json.loads(line) for line in (tiny_data_dir / "medquad" / "train.jsonl").read_text().splitlines()]
    rows[0]["answer_id"], rows[1]["answer_id"] = rows[1]["answer_id"], rows[0]["answer_id"]
    rows[2]["answer"] = "  " + rows[2]["answer"].replace(" ", "\n", 1)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    corpus = str(tiny_data_dir / "medquad" / "corpus.jsonl")
    by_text = {"local": {"path": str(tmp_path / "train.jsonl"),
                         "columns": {"query": "query", "answer_id": "answer_id", "answer": "answer"}}}
    retrieval = load_qa_retrieval(by_text, corpus, side="all")
    judged = {retrieval.queries[query_id]: list(answers) for query_id, answers in retrieval.qrels.items()}
    assert all(judged[row["query"]] == [f"a{row['focus'].split()[-1]}-{row['qtype']}"] for row in rows)
    assert "2 of 48 rows name an answer_id whose text" in caplog.text
    by_id = {"local": {**by_text["local"], "columns": {"query": "query", "answer_id": "answer_id"}}}
    as_given = load_qa_retrieval(by_id, corpus, side="all")
    first_two = [list(answers) for answers in as_given.qrels.values()][:2]
    assert first_two == [[rows[0]["answer_id"]], [rows[1]["answer_id"]]]


def test_prompts_train_and_are_saved_where_sentence_transformers_applies_them(tmp_path, tiny_data_dir, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    result = run_train("data=medquad", "loss=mnr", "evaluation=[medquad]", "trainer.max_steps=2",
                       "data.prompts={anchor: 'query: ', positive: 'passage: '}", run_dir=tmp_path,
                       data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "model" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == {"query": "query: ", "document": "passage: "}
    ours = SentenceEncoder.load(tmp_path / "model")
    theirs = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    texts = ["What are the causes of condition 3 ?", "the dog runs in the park."]
    torch.testing.assert_close(torch.as_tensor(theirs.encode_query(texts)), ours.encode(texts, prompt_name="query"),
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.as_tensor(theirs.encode_document(texts)),
                               ours.encode(texts, prompt_name="document"), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours.encode(texts, prompt_name="query"), ours.encode(texts), atol=1e-4)


def test_a_models_own_prompts_survive_load_train_save(tmp_path, tiny_data_dir, tiny_model_dir):
    start = SentenceEncoder.load(tiny_model_dir)
    start.prompts = {"query": "q: ", "passage": "p: "}
    start.save(tmp_path / "start")
    from embedlab.losses import MultipleNegativesRankingLoss
    from embedlab.objectives.bi_encoder import BiEncoderModule

    module = BiEncoderModule(SentenceEncoder.load(tmp_path / "start"), MultipleNegativesRankingLoss())
    collate = module.make_collator(["anchor", "positive"], None, {})
    # Without prompts in the data config, training reads each column behind the model's prompt for its role.
    assert collate.prompts == {"anchor": "q: ", "positive": "p: "}
    result = run_train("data=medquad", "loss=mnr", "evaluation=[medquad]", "trainer.max_steps=2",
                       run_dir=tmp_path / "run", data_dir=tiny_data_dir, backbone=str(tmp_path / "start"))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "model" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == {"query": "q: ", "passage": "p: "}


def test_prompts_for_columns_the_loss_does_not_read_are_refused(tmp_path, tiny_data_dir, tiny_model_dir):
    from cli import assert_one_line_error

    result = run_train("data=medquad", "loss=mnr", "data.prompts={question: 'query: '}", run_dir=tmp_path,
                       data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert_one_line_error(result, "prompts for ['question'], but loss 'mnr' reads the text columns")


def samplers(sizes: list[int], batch_size: int, rank: int = 0, world_size: int = 1) -> list[ShardedBatchSampler]:
    return [ShardedBatchSampler([(f"s{source} row {i}",) for i in range(size)], batch_size=batch_size,
                                unique_texts=True, seed=source, rank=rank, world_size=world_size)
            for source, size in enumerate(sizes)]


def test_the_proportional_mixture_trains_every_batch_of_every_source_once_an_epoch():
    mixture = MixedBatches(samplers([20, 8], 4), "proportional", seed=0, batches_done=lambda epoch: 0)
    first = list(mixture)
    assert len(first) == len(mixture) == 7
    assert all(len({source for source, _, _ in batch}) == 1 for batch in first)
    for source, rows in ((0, 20), (1, 8)):
        assert sorted(index for batch in first for s, _, index in batch if s == source) == list(range(rows))
    mixture.set_epoch(1)
    second = list(mixture)
    assert [batch[0][0] for batch in second] != [batch[0][0] for batch in first] or second != first
    assert {epoch for batch in second for _, epoch, _ in batch} == {1}


def test_round_robin_alternates_until_the_smaller_source_runs_out():
    mixture = MixedBatches(samplers([20, 8], 4), "round_robin", seed=0, batches_done=lambda epoch: 0)
    assert [batch[0][0] for batch in mixture] == [0, 1, 0, 1]


def test_processes_plan_the_same_mixture_each_with_its_share():
    ranks = [list(MixedBatches(samplers([40, 16], 4, rank, 2), "proportional", 0, lambda epoch: 0)) for rank in (0, 1)]
    assert [batch[0][0] for batch in ranks[0]] == [batch[0][0] for batch in ranks[1]]
    for first, second in zip(*ranks):
        assert not {index for _, _, index in first} & {index for _, _, index in second}


def test_a_resumed_mixture_skips_the_batches_already_trained_on():
    fresh = list(MixedBatches(samplers([20, 8], 4), "proportional", 0, lambda epoch: 0))
    resumed = list(MixedBatches(samplers([20, 8], 4), "proportional", 0, lambda epoch: 3))
    assert resumed == fresh[3:]


def test_the_paired_test_is_scipys_on_the_shared_queries():
    from scipy.stats import ttest_rel, wilcoxon

    first = {"q1": 0.9, "q2": 0.5, "q3": 0.7, "q4": 0.2, "only first": 1.0}
    second = {"q1": 0.6, "q2": 0.5, "q3": 0.4, "q4": 0.1}
    result = paired_test(first, second)
    a, b = [0.9, 0.5, 0.7, 0.2], [0.6, 0.5, 0.4, 0.1]
    assert result["queries"] == 4 and result["mean_difference"] == pytest.approx(0.175)
    assert result["p_ttest"] == pytest.approx(ttest_rel(a, b).pvalue)
    assert result["p_wilcoxon"] == pytest.approx(wilcoxon(a, b).pvalue)
    assert paired_test(second, second)["p_ttest"] == 1.0
