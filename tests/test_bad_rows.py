"""Malformed rows are either skipped with a count and a warning or stop the run naming the file and line."""

import logging

import pytest
from cli import train_here

from embedlab.data import sources
from embedlab.data.sources import load_source, read_hub, read_local
from embedlab.errors import ConfigError, DataError

COLUMNS = {"sentence1": "s1", "sentence2": "s2", "score": "score"}
# Line 1 is the header; lines 2, 4 and 9 are good.
CRAFTED_CSV = (
    "s1,s2,score\n"
    "a man plays.,a man plays music.,4.5\n"
    "a dog runs.,,2.0\n"             # 3: an empty text
    "a cat sits.,a cat rests.,3\n"
    "a boy reads.,a boy sleeps.,high\n"  # 5: a non-numeric score
    "a girl sings.,a girl hums.,7.5\n"   # 6: a score out of range
    "a bird flies.,a bird soars.,nan\n"  # 7: not a number either
    "a horse runs.\n"                    # 8: a missing field
    "the band plays.,a band performs.,5\n"
)


def crafted_csv(tmp_path):
    path = tmp_path / "crafted.csv"
    path.write_text(CRAFTED_CSV)
    return path


def test_error_names_the_file_and_line_of_the_first_bad_row(tmp_path):
    path = crafted_csv(tmp_path)
    with pytest.raises(DataError, match=rf"^{path}:3: empty or non-text value '' in column 'sentence2'$"):
        read_local(path, COLUMNS, score_range=(0, 5))


@pytest.mark.parametrize(("bad_line", "expected"), [
    ("a boy reads.,a boy sleeps.,high", ":2: score 'high' is not a number"),
    ("a girl sings.,a girl hums.,7.5", ":2: score '7.5' is outside [0, 5]"),
    ("a bird flies.,a bird soars.,nan", ":2: score 'nan' is outside [0, 5]"),
    ("a horse runs.", ":2: missing column 's2' (for 'sentence2')"),
    ("a dog runs.,   ,1", ":2: empty or non-text value '   ' in column 'sentence2'"),
])
def test_each_kind_of_bad_row_is_an_error_by_default(tmp_path, bad_line, expected):
    path = tmp_path / "one.csv"
    path.write_text(f"s1,s2,score\n{bad_line}\n")
    with pytest.raises(DataError) as raised:
        read_local(path, COLUMNS, score_range=(0, 5))
    assert str(raised.value).startswith(f"{path}{expected}")


def test_skip_drops_every_bad_row_counts_them_and_warns(tmp_path, caplog):
    path = crafted_csv(tmp_path)
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        rows = read_local(path, COLUMNS, score_range=(0, 5), on_bad_row="skip")
    assert [row["sentence1"] for row in rows] == ["a man plays.", "a cat sits.", "the band plays."]
    assert [row["score"] for row in rows] == [0.9, 0.6, 1.0]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path}: skipped 5 malformed rows of 8 (on_bad_row=skip); the first: {path}:3:")


def test_invalid_utf8_in_jsonl_and_tsv_is_a_bad_row(tmp_path, caplog):
    good = b'{"s1": "a man plays.", "s2": "a man plays music.", "score": 1}\n'
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_bytes(good + b'{"s1": "caf\xe9 au lait", "s2": "a drink.", "score": 0.5}\n' + b"[1, 2]\n" + good)
    with pytest.raises(DataError, match=rf"^{jsonl}:2: invalid UTF-8 in column 'sentence1'$"):
        read_local(jsonl, COLUMNS)
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        assert len(read_local(jsonl, COLUMNS, on_bad_row="skip")) == 2
    assert "skipped 2 malformed rows of 4" in caplog.text and f"{jsonl}:2: invalid UTF-8" in caplog.text

    tsv = tmp_path / "pairs.tsv"
    tsv.write_bytes(b"s1\ts2\tscore\nok one\tok two\t0.5\nbad \xff\xfe text\tfine\t0.1\n")
    with pytest.raises(DataError, match=rf"^{tsv}:3: invalid UTF-8 in column 'sentence1'$"):
        read_local(tsv, COLUMNS)
    assert len(read_local(tsv, COLUMNS, on_bad_row="skip")) == 1


def test_broken_json_line_is_a_bad_row(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"s1": "a", "s2": "b", "score": 0.5}\n{"s1": "a", "s2": \n')
    with pytest.raises(DataError, match=rf"^{path}:2: not valid JSON"):
        read_local(path, COLUMNS)
    assert len(read_local(path, COLUMNS, on_bad_row="skip")) == 1


def test_hub_rows_are_named_by_index(monkeypatch, caplog):
    hub_rows = [{"sentence1": "a man plays.", "sentence2": "a man plays music.", "score": 0.8},
                {"sentence1": "a dog runs.", "sentence2": None, "score": 0.1},
                {"sentence1": "a cat sits.", "sentence2": "a cat rests.", "score": 1.5}]
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: hub_rows)
    columns = {"sentence1": "sentence1", "sentence2": "sentence2", "score": "score"}
    source = {"hub": {"id": "someone/pairs", "split": "train", "columns": columns}}
    with pytest.raises(DataError, match=r"^hub:someone/pairs/train row 1: empty or non-text value None"):
        load_source(source, "data 'pairs'")
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        rows, origin = load_source(source, "data 'pairs'", on_bad_row="skip")
    assert origin == "hub:someone/pairs" and [row["sentence1"] for row in rows] == ["a man plays."]
    assert "hub:someone/pairs/train: skipped 2 malformed rows of 3" in caplog.text
    del hub_rows[1]
    with pytest.raises(DataError, match=r"^hub:someone/pairs/train row 1: score 1.5 is outside \[0, 1\]$"):
        read_hub("someone/pairs", "train", columns)


def test_a_policy_of_a_source_part_wins_over_the_default(tmp_path):
    path = crafted_csv(tmp_path)
    source = {"local": {"path": str(path), "columns": COLUMNS, "score_range": [0, 5], "on_bad_row": "skip"}}
    rows, _ = load_source(source, "data 'pairs'", on_bad_row="error")
    assert len(rows) == 3


def test_unknown_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="on_bad_row must be one of error, skip, got 'ignore'"):
        read_local(crafted_csv(tmp_path), COLUMNS, on_bad_row="ignore")


def test_training_run_skips_bad_rows_when_asked(tmp_path, tiny_data_dir, tiny_model_dir, capfd, monkeypatch):
    # Stopping is the default, and test_train checks that it reaches the user as one line. The 3 good rows are one
    # step, trained at the full rate (the warm-up's first step would have rate 0).
    table = crafted_csv(tmp_path)
    result = train_here(capfd, monkeypatch, "data=pairs", "loss=cosine", f"data.source.local.path={table}",
                        "+data.source.local.score_range=[0,5]", "data.on_bad_row=skip", "optim.warmup_ratio=0",
                        "data.source.local.columns={sentence1: s1, sentence2: s2, score: score}",
                        "trainer.max_steps=1", run_dir=tmp_path / "run", data_dir=tiny_data_dir,
                        backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "skipped 5 malformed rows of 8 (on_bad_row=skip)" in log
    assert "data pairs: 3 columns rows" in log
