"""Retrieval: metrics by hand, chunked search against brute force, the evaluator against sentence-transformers,
and the BEIR, LiveQA-Med and PubMedQA loaders on hand-made files."""

import json
import math

import pytest
import torch
from conftest import SENTENCES
from fakes import LookupEncoder

from embedlab.errors import DataError
from embedlab.evaluation.datasets import RetrievalSet
from embedlab.evaluation.encoding import encode_inputs
from embedlab.evaluation.loaders import load_beir, load_liveqa_med, load_pubmedqa
from embedlab.evaluation.retrieval import RetrievalEvaluator, ranking_metrics
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.search import top_k

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_made_set() -> tuple[RetrievalSet, LookupEncoder]:
    vectors = {"q1": [1.0, 0.0], "q2": [0.0, 1.0], "d1": [1.0, 0.0], "d2": [0.8, 0.6], "d3": [0.6, 0.8],
               "d4": [0.0, 1.0], "d5": [-1.0, 0.1]}
    data = RetrievalSet(queries={"q1": "q1", "q2": "q2", "unjudged": "q1"},
                        corpus={name: name for name in ("d1", "d2", "d3", "d4", "d5")},
                        qrels={"q1": {"d2": 2, "d4": 1, "d1": 0}, "q2": {"d5": 1}})
    return data, LookupEncoder(vectors)


def test_retrieval_metrics_by_hand():
    # q1 ranks d1 d2 d3 d4 d5 (gains 0 2 0 1 0); q2 ranks d4 d3 d2 d5 d1 (its one relevant document 4th).
    data, encoder = hand_made_set()
    assert list(data.queries) == ["q1", "q2"]  # a query without judgements is not scored
    metrics = RetrievalEvaluator("hand", data, batch_size=2)(encoder)
    ndcg_q1 = (2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3))
    ndcg_q2 = 1 / math.log2(5)
    assert metrics["hand/ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)
    assert metrics["hand/mrr@10"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert metrics["hand/map@100"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1 / 4) / 2)
    assert metrics["hand/recall@1"] == 0.0
    assert metrics["hand/recall@10"] == metrics["hand/recall@100"] == 1.0


def test_mrr_stops_at_ten_and_unretrieved_queries_score_zero():
    run = {"q": {f"d{rank}": 1.0 - rank / 100 for rank in range(1, 13)}}
    qrels = {"q": {"d11": 1}, "missing": {"d1": 1}}
    metrics = ranking_metrics(qrels, run)
    assert metrics["mrr@10"] == 0.0
    assert metrics["ndcg@10"] == 0.0
    assert metrics["recall@10"] == 0.0
    assert metrics["recall@100"] == pytest.approx(1 / 2)
    assert metrics["map@100"] == pytest.approx((1 / 11) / 2)


@pytest.mark.parametrize("chunk_size", [1, 5, 37, 100])
@pytest.mark.parametrize("score_function", ["cosine", "dot"])
def test_chunked_search_equals_brute_force(chunk_size, score_function):
    generator = torch.Generator().manual_seed(0)
    queries, corpus = torch.randn(5, 8, generator=generator), torch.randn(37, 8, generator=generator)
    scores, indices = top_k(queries, corpus.split(chunk_size), 10, score_function=score_function,
                            query_block_size=2)
    if score_function == "cosine":
        queries, corpus = (torch.nn.functional.normalize(m, dim=-1) for m in (queries, corpus))
    expected_scores, expected_indices = (queries @ corpus.T).topk(10, dim=1)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(scores, expected_scores, atol=1e-6)


def test_search_depth_is_capped_by_the_corpus():
    scores, indices = top_k(torch.tensor([[1.0, 0.0]]), [torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])], 100)
    assert indices.tolist() == [[1, 0]]
    assert scores[0].tolist() == pytest.approx([1.0, 0.0])


def test_scoring_given_embeddings_equals_encoding_the_corpus_in_chunks():
    # During training the evaluator scores the embeddings the processes computed; afterwards it embeds the corpus
    # a chunk at a time itself. Both must rank alike.
    data, encoder = hand_made_set()
    chunked = RetrievalEvaluator("hand", data, corpus_chunk_size=2)
    given = chunked.score(encode_inputs(encoder, chunked.inputs, batch_size=2))
    encoded = chunked(encoder)
    # Everything but the speed of the search, which is a timing.
    timing = "hand/queries_per_second"
    assert given.pop(timing) > 0 and encoded.pop(timing) > 0
    assert given == encoded
    assert [role for role, _ in chunked.inputs] == ["query"] * 2 + ["document"] * 5


def test_retrieval_evaluator_matches_sentence_transformers(tiny_model_dir, tmp_path):
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    from sentence_transformers import SentenceTransformer

    corpus = {f"doc{i}": text for i, text in enumerate(SENTENCES)}
    queries = {"q1": "a man plays music", "q2": "a dog in the park", "q3": "children with a ball"}
    relevant = {"q1": {"doc0", "doc1"}, "q2": {"doc2"}, "q3": {"doc4", "doc8", "doc11"}}
    data = RetrievalSet(queries, corpus, {q: dict.fromkeys(docs, 1) for q, docs in relevant.items()})
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    ours = RetrievalEvaluator("tiny", data, batch_size=4, corpus_chunk_size=5)(encoder)
    encoder.save(tmp_path / "model")
    reference = evaluation.InformationRetrievalEvaluator(
        queries, corpus, relevant, batch_size=4, write_csv=False, precision_recall_at_k=[1, 10],
        score_functions={"cosine": lambda a, b: torch.nn.functional.normalize(a, dim=-1)
                         @ torch.nn.functional.normalize(b, dim=-1).T})(SentenceTransformer(str(tmp_path / "model")))
    for metric in ("ndcg@10", "mrr@10", "map@100", "recall@1", "recall@10"):
        assert ours[f"tiny/{metric}"] == pytest.approx(reference[f"cosine_{metric}"], abs=1e-6), metric


def test_beir_folder(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "Flu", "text": "A virus."}) + "\n"
                                           + json.dumps({"_id": "d2", "title": "", "text": "Bones."}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "what is flu"}) + "\n"
                                            + json.dumps({"_id": "2", "text": "no judgements"}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n")
    data = load_beir(str(tmp_path))
    assert data.corpus == {"d1": "Flu A virus.", "d2": "Bones."}
    assert data.queries == {"1": "what is flu"}
    assert data.qrels == {"1": {"d1": 2, "d2": 0}}
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td9\t1\n")
    with pytest.raises(DataError, match="not in the corpus"):
        load_beir(str(tmp_path))
    with pytest.raises(DataError, match="dev.tsv"):
        load_beir(str(tmp_path), split="dev")


def write_liveqa(folder):
    folder.mkdir(exist_ok=True)
    (folder / "TREC-2017-LiveQA-Medical-Test-Questions-w-summaries.xml").write_text(
        '<?xml version="1.0"?><Set>'
        '<NLM-QUESTION qid="TQ1"><Original-Question><SUBJECT>Flu</SUBJECT><MESSAGE>how long\n does it last</MESSAGE>'
        '</Original-Question><NIST-PARAPHRASE>How long does flu last?</NIST-PARAPHRASE>'
        '<NLM-Summary>Duration of flu?</NLM-Summary></NLM-QUESTION>'
        '<NLM-QUESTION qid="TQ2"><Original-Question><SUBJECT>Gout</SUBJECT><MESSAGE>diet</MESSAGE>'
        '</Original-Question><NIST-PARAPHRASE>Gout diet?</NIST-PARAPHRASE>'
        '<NLM-Summary>What diet for gout?</NLM-Summary></NLM-QUESTION></Set>')
    (folder / "All-2479-Answers-retrieved-from-MedQuAD.csv").write_text(
        'AnswerID,Answer\nA1.txt,"Question: Flu?\nAnswer: A week."\nA2.txt,"Question: Gout?\nAnswer: Less meat."\n'
        'A1.txt,"Question: Flu?\nAnswer: A week."\n')
    (folder / "All-qrels_LiveQAMed2017-TestQuestions_2479_Judged-Answers.txt").write_text(
        "1 4-Excellent A1.txt\n1 1-Incorrect A2.txt\n2 2-Related A2.txt\n2 3-Incomplete A1.txt\n")


def test_liveqa_med_questions_answers_and_graded_qrels(tmp_path):
    write_liveqa(tmp_path)
    data = load_liveqa_med(str(tmp_path))
    assert data.queries == {"1": "Duration of flu?", "2": "What diet for gout?"}
    assert data.corpus == {"A1.txt": "Question: Flu? Answer: A week.", "A2.txt": "Question: Gout? Answer: Less meat."}
    assert data.qrels == {"1": {"A1.txt": 3, "A2.txt": 0}, "2": {"A2.txt": 1, "A1.txt": 2}}
    assert load_liveqa_med(str(tmp_path), "original").queries["1"] == "Flu. how long does it last"
    assert load_liveqa_med(str(tmp_path), "paraphrase").queries["2"] == "Gout diet?"
    with pytest.raises(DataError, match="query_field"):
        load_liveqa_med(str(tmp_path), "subject")


def test_pubmedqa_questions_against_their_abstracts(tmp_path):
    entries = {"11": {"QUESTION": "Does A help?", "CONTEXTS": ["A was given.", "It  helped."]},
               "22": {"QUESTION": "Is B safe?", "CONTEXTS": ["B was safe."]}}
    (tmp_path / "ori_pqal.json").write_text(json.dumps(entries))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"22": "yes"}))
    data = load_pubmedqa(str(tmp_path / "ori_pqal.json"))
    assert data.corpus == {"11": "A was given. It helped.", "22": "B was safe."}
    assert data.qrels == {"11": {"11": 1}, "22": {"22": 1}}
    test_split = load_pubmedqa(str(tmp_path / "ori_pqal.json"), str(tmp_path / "test_ground_truth.json"))
    assert test_split.queries == {"22": "Is B safe?"} and len(test_split.corpus) == 2
