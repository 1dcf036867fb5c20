"""Readers for the evaluation sets: STS tables, BIOSSES, labelled pairs (tables or RQE's XML), BEIR folders,
LiveQA-Med against MedQuAD, and PubMedQA questions against their abstracts.

Each returns one of the containers in `embedlab.evaluation.datasets`; a missing or malformed file stops with a
one-line DataError that names it.
"""

import csv
import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.etree import ElementTree

from embedlab.data.sources import LOCAL_DATA_HINT, label_id, load_source, read_local
from embedlab.errors import DataError
from embedlab.evaluation.datasets import (
    ClassifiedPairs,
    LabelledPairs,
    RetrievalSet,
    ScoredPairs,
)

log = logging.getLogger(__name__)

# The LiveQA judgement scale: "1-Incorrect" is judged irrelevant, the others are graded gains 1 to 3.
LIVEQA_GAINS = {"1-Incorrect": 0, "2-Related": 1, "3-Incomplete": 2, "4-Excellent": 3}
LIVEQA_QUERY_FIELDS = ("summary", "paraphrase", "original")


def load_scored_pairs(source: Mapping) -> ScoredPairs:
    """(sentence1, sentence2, score) rows from a data source: a local table, else its hub dataset."""
    rows, _ = load_source(source, "STS evaluation")
    return ScoredPairs([row["sentence1"] for row in rows], [row["sentence2"] for row in rows],
                       [row["score"] for row in rows])


def load_classified_pairs(source: Mapping, label_names: Mapping[str, int]) -> ClassifiedPairs:
    """(sentence1, sentence2, label) rows of a data source with class names (or ids) mapped through `label_names`;
    rows whose label is neither (such as SNLI's "-", no annotator majority) are skipped with a warning."""
    rows, origin = load_source(source, "evaluation")
    num_classes = len(set(label_names.values()))
    kept, unknown = [], set()
    for row in rows:
        label = label_id(row["label"], label_names)
        if label is not None and 0 <= label < num_classes:
            kept.append((row["sentence1"], row["sentence2"], label))
        else:
            unknown.add(str(row["label"]))
    if len(kept) < len(rows):
        log.warning("%s: skipped %d rows with labels %s", origin, len(rows) - len(kept), sorted(unknown)[:5])
    first, second, labels = (list(column) for column in zip(*kept)) if kept else ([], [], [])
    return ClassifiedPairs(first, second, labels, num_classes)


def load_biosses(sentences_path: str, scores_path: str) -> ScoredPairs:
    """BIOSSES plain text: line 2i-1 and 2i of one file are pair i, line i of the other its gold score."""
    sentences = _read_lines(sentences_path)
    scores = [_number(line, scores_path) for line in _read_lines(scores_path)]
    if len(sentences) != 2 * len(scores):
        raise DataError(f"{sentences_path}: {len(sentences)} sentences for {len(scores)} scores in {scores_path}; "
                        "expected two sentences per score")
    return ScoredPairs(sentences[0::2], sentences[1::2], scores)


def load_labelled_pairs(local: Mapping, positive_labels: Sequence) -> LabelledPairs:
    """(sentence1, sentence2, label) rows of a local table; labels in `positive_labels` become 1, others 0."""
    _require_file(local["path"])
    rows = read_local(**local)
    positives = {str(label) for label in positive_labels}
    return LabelledPairs([row["sentence1"] for row in rows], [row["sentence2"] for row in rows],
                         [int(str(row["label"]) in positives) for row in rows])


def load_rqe(path: str) -> LabelledPairs:
    """RQE's XML: <pair value="true|false"> with a <chq> and a <faq> question; value true is the positive class.

    A pair missing either question is skipped with a warning (the training file has one with an empty <faq>).
    """
    root = _parse_xml(path)
    sentence1, sentence2, labels = [], [], []
    skipped = []
    for pair in root.iter("pair"):
        first, second = (" ".join((pair.findtext(tag) or "").split()) for tag in ("chq", "faq"))
        if not first or not second:
            skipped.append(pair.get("pid", "?"))
            continue
        sentence1.append(first)
        sentence2.append(second)
        labels.append(int(pair.get("value", "").strip().lower() == "true"))
    if skipped:
        log.warning("%s: skipped %d pairs without both questions (pid %s)", path, len(skipped), ", ".join(skipped[:5]))
    if not labels:
        raise DataError(f"{path}: no <pair> with both a <chq> and a <faq> question")
    return LabelledPairs(sentence1, sentence2, labels)


def load_beir(folder: str, split: str = "test") -> RetrievalSet:
    """A BEIR folder: corpus.jsonl (_id, title, text), queries.jsonl (_id, text) and qrels/<split>.tsv
    (query-id, corpus-id, score, with a header). A title is joined to its text with a space."""
    root = Path(folder)
    corpus = read_corpus_jsonl(root / "corpus.jsonl", with_title=True)
    queries = {str(record["_id"]): record["text"] for record in _read_jsonl(root / "queries.jsonl")}
    qrels_path = root / "qrels" / f"{split}.tsv"
    _require_file(qrels_path)
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(float(row["score"]))
    return _retrieval_set(queries, corpus, qrels, str(root))


def read_corpus_jsonl(path, with_title: bool) -> dict[str, str]:
    """A BEIR-style corpus.jsonl (_id, title, text) as id -> text, the title before the text when `with_title`."""
    return _corpus_texts(_read_corpus_records(path), with_title)


def _corpus_texts(records: dict[str, tuple[str, str]], with_title: bool) -> dict[str, str]:
    return {doc_id: f"{title} {text}".strip() if with_title else text for doc_id, (title, text) in records.items()}


def _read_corpus_records(path) -> dict[str, tuple[str, str]]:
    return {str(record["_id"]): (record.get("title") or "", record.get("text") or "")
            for record in _read_jsonl(Path(path))}


def load_qa_retrieval(pairs: Mapping, corpus_path: str, side: str = "holdout", distractors: int | None = None,
                      seed: int = 0, with_title: bool = False) -> RetrievalSet:
    """The questions of a (query, answer_id) table against a BEIR-style corpus.jsonl: each distinct question is
    relevant to the answers of all its rows. `side` picks a side of the table's holdout ("holdout": a dev split
    carved from the training pairs; see embedlab.data.sources.Holdout).

    When the table also maps an `answer` column, a row is judged by its answer's text: an answer_id whose corpus text
    is another answer's is a broken link (MedQuAD's training file has many), and grading by it would mark the question's
    own answer wrong. Such rows are counted in a warning and judged by the corpus id that holds their text.

    With `distractors`, the corpus is cut to the relevant answers plus that many others drawn with `seed`, a
    NanoBEIR-style sub-corpus that makes evaluation during training affordable; the full corpus scores the final
    model.
    """
    rows, origin = load_source(pairs, "retrieval pairs", side=side)
    records = _read_corpus_records(corpus_path)
    corpus = _corpus_texts(records, with_title)
    judged_ids = _judged_answer_ids(rows, records, origin, corpus_path)
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row, answer_id in zip(rows, judged_ids):
        query_id = query_ids.setdefault(row["query"], f"q{len(query_ids)}")
        qrels.setdefault(query_id, {})[answer_id] = 1
    if distractors is not None:
        relevant = {doc_id for judged in qrels.values() for doc_id in judged}
        others = sorted(doc_id for doc_id in corpus if doc_id not in relevant)
        kept = relevant | set(random.Random(seed).sample(others, min(distractors, len(others))))
        corpus = {doc_id: text for doc_id, text in corpus.items() if doc_id in kept}
    log.info("%s: %d questions against %d documents", origin, len(query_ids), len(corpus))
    return _retrieval_set({query_id: query for query, query_id in query_ids.items()}, corpus, qrels, origin)


def _judged_answer_ids(rows: list[dict], records: dict[str, tuple[str, str]], origin: str, corpus_path) -> list[str]:
    """Each row's answer_id, or, where the row's answer text sits in the corpus under another id, that id."""
    if not rows or "answer" not in rows[0]:
        return [str(row["answer_id"]) for row in rows]
    collapsed = {doc_id: _collapsed(text) for doc_id, (_, text) in records.items()}
    id_of_text = {text: doc_id for doc_id, text in collapsed.items()}
    judged, relinked, unmatched = [], 0, 0
    for row in rows:
        given = str(row["answer_id"])
        text = _collapsed(row["answer"])
        if collapsed.get(given) == text:
            judged.append(given)
        elif text in id_of_text:
            judged.append(id_of_text[text])
            relinked += 1
        else:
            judged.append(given)
            unmatched += 1
    if relinked or unmatched:
        log.warning("%s: %d of %d rows name an answer_id whose text in %s is another answer's; %d judged by the "
                    "id holding their answer text, %d (text not in the corpus) by the id as given",
                    origin, relinked + unmatched, len(rows), corpus_path, relinked, unmatched)
    return judged


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def load_liveqa_med(folder: str, query_field: str = "summary") -> RetrievalSet:
    """The 104 TREC-2017 LiveQA-Med test questions against the judged MedQuAD answers, with graded qrels.

    `query_field`: `summary` (NLM's short question), `paraphrase` (NIST's) or `original` (the consumer's subject and
    message, as asked).
    """
    if query_field not in LIVEQA_QUERY_FIELDS:
        raise DataError(f"query_field must be one of {', '.join(LIVEQA_QUERY_FIELDS)}, got {query_field!r}")
    root = Path(folder)
    questions_path = root / "TREC-2017-LiveQA-Medical-Test-Questions-w-summaries.xml"
    queries = {}
    for question in _parse_xml(questions_path).iter("NLM-QUESTION"):
        number = question.get("qid", "").removeprefix("TQ")
        if query_field == "summary":
            text = _child_text(question, "NLM-Summary", questions_path)
        elif query_field == "paraphrase":
            text = _child_text(question, "NIST-PARAPHRASE", questions_path)
        else:
            original = question.find("Original-Question")
            parts = [original.findtext(tag) or "" for tag in ("SUBJECT", "MESSAGE")] if original is not None else []
            text = ". ".join(part.strip() for part in parts if part.strip())
        queries[number] = " ".join(text.split())

    answers_path = root / "All-2479-Answers-retrieved-from-MedQuAD.csv"
    _require_file(answers_path)
    corpus = {}
    with answers_path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            # Answers judged for several questions repeat; the corpus holds each once.
            corpus.setdefault(row["AnswerID"], " ".join(row["Answer"].split()))

    qrels_path = root / "All-qrels_LiveQAMed2017-TestQuestions_2479_Judged-Answers.txt"
    qrels: dict[str, dict[str, int]] = {}
    for line_number, line in enumerate(_read_lines(qrels_path), start=1):
        fields = line.split()
        if len(fields) != 3 or fields[1] not in LIVEQA_GAINS:
            raise DataError(f"{qrels_path}:{line_number}: expected 'question judgement answer_id', got {line!r}")
        number, judgement, answer_id = fields
        qrels.setdefault(number, {})[answer_id] = LIVEQA_GAINS[judgement]
    return _retrieval_set(queries, corpus, qrels, str(root))


def load_pubmedqa(path: str, split_ids_path: str | None = None) -> RetrievalSet:
    """PubMedQA PQA-L: each question against all the abstracts (its CONTEXTS joined); its own is the one relevant
    document. `split_ids_path` (e.g. test_ground_truth.json) keeps only the questions it lists; the corpus stays whole."""
    _require_file(path)
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    corpus = {pmid: " ".join(" ".join(entry["CONTEXTS"]).split()) for pmid, entry in entries.items()}
    kept = entries.keys()
    if split_ids_path:
        _require_file(split_ids_path)
        kept = json.loads(Path(split_ids_path).read_text(encoding="utf-8")).keys()
    queries = {pmid: entries[pmid]["QUESTION"] for pmid in kept}
    qrels = {pmid: {pmid: 1} for pmid in kept}
    return _retrieval_set(queries, corpus, qrels, path)


def _retrieval_set(queries, corpus, qrels, where: str) -> RetrievalSet:
    try:
        return RetrievalSet(queries, corpus, qrels)
    except ValueError as error:
        raise DataError(f"{where}: {error}") from None


def _require_file(path) -> None:
    if not Path(path).is_file():
        raise DataError(f"no file at {path}. {LOCAL_DATA_HINT}")


def _read_lines(path) -> list[str]:
    _require_file(path)
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_jsonl(path: Path):
    _require_file(path)
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None


def _parse_xml(path) -> ElementTree.Element:
    _require_file(path)
    try:
        return ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(f"{path}: not valid XML ({error})") from None


def _child_text(element: ElementTree.Element, tag: str, where) -> str:
    text = " ".join((element.findtext(tag) or "").split())
    if not text:
        raise DataError(f"{where}: a <{element.tag}> has no <{tag}> text")
    return text


def _number(text: str, where) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a number") from None
