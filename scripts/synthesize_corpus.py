"""Build a large BEIR-style retrieval set from the local corpora, to measure evaluation at scale.

`python scripts/synthesize_corpus.py --data-dir ../shared/data --out /tmp/corpus100k --size 100000`, then
`python scripts/evaluate.py evaluation=beir evaluation.beir.data.folder=/tmp/corpus100k`.

Queries are the first sentences of the STS benchmark test pairs scored 4 or more; each one's relevant document is
its pair's second sentence. Distinct sentences of the other local corpora (PubMed HoC, the NLI sets, the STS and
SICK train sentences) fill the corpus up to --size as distractors.
"""

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from embedlab.cli import report_errors
from embedlab.errors import DataError

RELEVANT_SCORE = 4.0


def sts_test_pairs(data_dir: Path) -> list[tuple[str, str]]:
    with (data_dir / "stsbenchmark" / "sts-test.csv").open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row[5], row[6]) for row in rows if float(row[4]) >= RELEVANT_SCORE]


def distractor_sentences(data_dir: Path) -> Iterator[str]:
    yield from (data_dir / "biomed_hoc_pubmed_sentences" / "hoc_text_concat.txt").read_text(encoding="utf-8").splitlines()
    for path in sorted((data_dir / "nli_ling_in_loop").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            yield record["premise"]
            yield record["hypothesis"]
    for path in sorted((data_dir / "nli_snli_mnli_dev_test").glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                yield row["sentence1"]
                yield row["sentence2"]
    for name in ("sts-train.csv", "sts-dev.csv"):
        with (data_dir / "stsbenchmark" / name).open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                yield row[5]
                yield row[6]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder laid out like shared/data")
    parser.add_argument("--out", required=True, help="the BEIR folder to write")
    parser.add_argument("--size", type=int, default=100_000, help="documents in the corpus")
    args = parser.parse_args(argv)
    data_dir, out = Path(args.data_dir), Path(args.out)
    if not (data_dir / "stsbenchmark" / "sts-test.csv").is_file():
        raise DataError(f"no stsbenchmark/sts-test.csv under {data_dir}: give --data-dir a folder laid out like "
                        "../shared/data")
    pairs = sts_test_pairs(data_dir)
    corpus = dict.fromkeys(second for _, second in pairs)
    for sentence in distractor_sentences(data_dir):
        if len(corpus) >= args.size:
            break
        if sentence.strip() and sentence.strip() not in corpus:
            corpus[sentence.strip()] = None
    if len(corpus) < args.size:
        raise DataError(f"only {len(corpus)} distinct sentences under {data_dir}")
    doc_ids = {text: f"doc{index}" for index, text in enumerate(corpus)}

    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for text, doc_id in doc_ids.items():
            handle.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as queries, \
            (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for index, (query, relevant) in enumerate(pairs):
            queries.write(json.dumps({"_id": f"q{index}", "text": query}) + "\n")
            qrels.write(f"q{index}\t{doc_ids[relevant]}\t1\n")
    print(f"wrote {len(pairs)} queries and {len(doc_ids)} documents to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(report_errors(main))
