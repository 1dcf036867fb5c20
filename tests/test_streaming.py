import json
import logging

import pytest
from cli import assert_one_line_error, train_here
from fakes import trainer_for_data

from embedlab.data.sources import BadRow
from embedlab.data.streaming import StreamedBatches, stream_rows
from embedlab.data.tables import PairsDataModule
from embedlab.errors import ConfigError
from embedlab.losses import MultipleNegativesRankingLoss


def write_pairs(path, count: int):
    path.write_text("".join(json.dumps({"query": f"query {i}", "doc": f"document {i}"}) + "\n" for i in range(count)))
    return path


def pairs_source(path) -> dict:
    return {"local": {"path": str(path), "columns": {"anchor": "query", "positive": "doc"}}}


def test_two_ranks_stream_disjoint_shares_of_every_row(tmp_path):
    source = pairs_source(write_pairs(tmp_path / "pairs.jsonl", 21))
    shares = [list(stream_rows(source, "data 'pairs'", rank=rank, world_size=2, seed=3, shuffle_buffer=8))
              for rank in range(2)]
    anchors = [{row["anchor"] for row in share} for share in shares]
    assert anchors[0].isdisjoint(anchors[1])
    assert anchors[0] | anchors[1] == {f"query {i}" for i in range(21)}
    assert abs(len(shares[0]) - len(shares[1])) <= 1
    # Read again (the next epoch), a share is the same rows.
    again = stream_rows(source, "data 'pairs'", rank=0, world_size=2, seed=3, shuffle_buffer=8)
    assert {row["anchor"] for row in again} == anchors[0]


def test_streamed_bad_rows_are_named_by_line_or_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b'{"query": "q1", "doc": "d1"}\n\nnot json\n{"query": "q4", "doc": "  "}\n{"query": "q5", '
                     b'"doc": "d5"}\n{"query": "q6 \xff", "doc": "d6"}\n')
    with pytest.raises(BadRow, match=r"pairs.jsonl:(3: not valid JSON|4: empty or non-text|6: invalid UTF-8)"):
        list(stream_rows(pairs_source(path), "data 'pairs'", on_bad_row="error"))
    with caplog.at_level(logging.WARNING, logger="embedlab.data.streaming"):
        rows = list(stream_rows(pairs_source(path), "data 'pairs'", on_bad_row="skip"))
    assert sorted(row["anchor"] for row in rows) == ["q1", "q5"]
    assert "skipped 3 malformed rows of 5 streamed" in caplog.text


def test_hub_datasets_stream_split_across_ranks_and_name_bad_rows_by_index(tmp_path, monkeypatch):
    import datasets

    path = write_pairs(tmp_path / "hub.jsonl", 10)
    with path.open("a") as handle:
        handle.write(json.dumps({"query": "", "doc": "empty query"}) + "\n")
    load = datasets.load_dataset

    def offline_hub(id, subset=None, split=None, streaming=False):
        # The hub dataset `id` stands for the local table, read through the same streaming loader.
        assert (id, split, streaming) == ("org/pairs", "train", True)
        return load("json", data_files=str(path), split=split, streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", offline_hub)
    source = {"hub": {"id": "org/pairs", "split": "train", "columns": {"anchor": "query", "positive": "doc"}}}
    shares = [list(stream_rows(source, "data 'pairs'", on_bad_row="skip", rank=rank, world_size=2))
              for rank in range(2)]
    anchors = [{row["anchor"] for row in share} for share in shares]
    assert anchors[0].isdisjoint(anchors[1]) and anchors[0] | anchors[1] == {f"query {i}" for i in range(10)}
    with pytest.raises(BadRow, match=r"hub:org/pairs/train row 10: empty or non-text value ''"):
        list(stream_rows(source, "data 'pairs'"))


def test_streamed_tsv_without_header_rescales_scores(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text('g\tf\t2012\t1\t4.0\tHe said "yes.\tHe agreed.\ng\tf\t2012\t2\t1.5\tA cat.\tA dog.\tsrc\n')
    source = {"local": {"path": str(path), "delimiter": "\t", "quoting": "none", "header": False,
                        "columns": {"sentence1": 5, "sentence2": 6, "score": 4}, "score_range": [0, 5]}}
    rows = sorted(stream_rows(source, "data 'stsb'"), key=lambda row: row["score"])
    assert rows == [{"sentence1": "A cat.", "sentence2": "A dog.", "score": 0.3},
                    {"sentence1": 'He said "yes.', "sentence2": "He agreed.", "score": 0.8}]


def test_streamed_batches_keep_texts_unique_and_lose_no_row():
    # Five anchors with four positives each, in order: taken as they come, every batch would repeat an anchor.
    rows = [{"anchor": f"anchor {a}", "positive": f"positive {a}-{p}"} for a in range(5) for p in range(4)]
    batches = list(StreamedBatches(rows, ["anchor", "positive"], batch_size=4, unique_texts=True))
    for batch in batches:
        assert len({row["anchor"] for row in batch}) == len(batch)
    assert sorted(row["positive"] for batch in batches for row in batch) == sorted(row["positive"] for row in rows)
    assert sum(len(batch) == 4 for batch in batches) >= 4

    dropped = list(StreamedBatches(rows[:6], ["anchor", "positive"], batch_size=4, unique_texts=False,
                                   drop_last=True))
    assert [len(batch) for batch in dropped] == [4]


def test_streaming_without_max_steps_is_a_config_error(tmp_path):
    module = PairsDataModule(source=pairs_source(write_pairs(tmp_path / "pairs.jsonl", 4)), name="pairs",
                             streaming=True)
    module.fit_loss("mnr", MultipleNegativesRankingLoss)
    module.trainer = trainer_for_data(max_steps=-1)
    with pytest.raises(ConfigError, match="set trainer.max_steps=N"):
        module.setup("fit")


def test_cli_trains_a_few_steps_on_a_streamed_jsonl(tmp_path, tiny_model_dir, tiny_data_dir, capfd, monkeypatch):
    path = write_pairs(tmp_path / "pairs.jsonl", 40)
    overrides = ["data=pairs", "loss=mnr", "data.streaming=true", f"data.source.local.path={path}",
                 "data.source.local.columns={anchor: query, positive: doc}", "eval_every_n_steps=10"]
    paths = {"data_dir": tiny_data_dir, "backbone": tiny_model_dir}
    result = train_here(capfd, monkeypatch, *overrides, "trainer.max_steps=3", run_dir=tmp_path / "run", **paths)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`max_steps=3` reached" in result.stderr + result.stdout, result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "test/stsb/spearman_cosine" in results
    assert (tmp_path / "run" / "model" / "modules.json").exists()

    missing = train_here(capfd, monkeypatch, *overrides, run_dir=tmp_path / "no_steps", **paths)
    assert_one_line_error(missing, "set trainer.max_steps=N")
