"""Negatives from the data's own groups (data.group_negatives): a sibling's positive with the chosen chance, never
the anchor's own positives, seeded; MedQuAD's rows gain a negative column that MNR reads."""

import pytest
from cli import assert_one_line_error, train_here
from hydra import compose, initialize_config_dir

from embedlab.assembly import build_datamodule
from embedlab.config import CONF_DIR
from embedlab.data.group_negatives import NEGATIVE_GROUP_COLUMN, GroupNegatives
from embedlab.errors import ConfigError


def grouped_rows(groups: int = 40, per_group: int = 3) -> list[dict]:
    rows = [{"anchor": f"question {kind} about {group}", "positive": f"answer {kind} about {group}",
             NEGATIVE_GROUP_COLUMN: f"g{group}"} for group in range(groups) for kind in range(per_group)]
    # The same question asked with a second answer, and a row without a group.
    rows.append({"anchor": "question 0 about 0", "positive": "another answer 0 about 0", NEGATIVE_GROUP_COLUMN: "g0"})
    rows.append({"anchor": "a lone question", "positive": "a lone answer", NEGATIVE_GROUP_COLUMN: ""})
    return rows


def group_of(text: str) -> str:
    return text.rsplit(" ", 1)[-1] if " about " in text else ""


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_a_share_of_the_rows_gets_a_sibling_and_none_gets_its_own_answers(share):
    rows = grouped_rows()
    own = {}
    for row in rows:
        own.setdefault(row["anchor"], set()).add(row["positive"])
    with_negatives = GroupNegatives("topic", share).add_to([dict(row) for row in rows], seed=3)
    assert [(row["anchor"], row["positive"]) for row in with_negatives] == [(r["anchor"], r["positive"]) for r in rows]
    assert all(NEGATIVE_GROUP_COLUMN not in row for row in with_negatives)
    siblings = 0
    for row in with_negatives:
        assert row["negative"] not in own[row["anchor"]]
        siblings += group_of(row["negative"]) == group_of(row["positive"]) != ""
    assert group_of(with_negatives[-1]["negative"]) != ""  # the lone row: a positive of some group
    rows_with_siblings = len(rows) - 1
    assert siblings == pytest.approx(share * rows_with_siblings, abs=0.15 * rows_with_siblings)
    assert (siblings == 0) == (share == 0.0) and (siblings == rows_with_siblings) == (share == 1.0)


def test_the_negatives_repeat_with_the_seed_and_change_with_another():
    def negatives(seed):
        return [row["negative"] for row in GroupNegatives("topic", 0.5).add_to(grouped_rows(), seed=seed)]

    assert negatives(1) == negatives(1) != negatives(2)


def test_rows_of_one_group_alone_have_no_negative_from_another():
    rows = [{"anchor": f"q{i}", "positive": f"a{i}", NEGATIVE_GROUP_COLUMN: "g"} for i in range(3)]
    with pytest.raises(Exception, match="at least two groups"):
        GroupNegatives("topic", 0.0).add_to(rows, seed=0)


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ConfigError, match="share must be between 0 and 1"):
        GroupNegatives("topic", 1.5)


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("train", overrides=list(overrides))


def test_medquad_rows_gain_a_sibling_answer_as_their_negative(tiny_data_dir):
    cfg = compose_train("data=medquad", "loss=mnr", f"paths.data_dir={tiny_data_dir}",
                        "data.group_negatives={field: focus, share: 1.0}")
    datamodule = build_datamodule(cfg)
    assert datamodule.text_columns == ["anchor", "positive", "negative"]
    rows, origin = datamodule.load_train(datamodule.format)
    assert "negatives by focus" in origin
    for row in rows:
        # The tiny MedQuAD's answers name their condition: a sibling is another answer about the same one.
        condition = row["positive"].split(":")[0].split()[-1]
        assert row["negative"] != row["positive"] and row["negative"].split(":")[0].split()[-1] == condition


def test_group_negatives_on_a_source_that_maps_its_own_negative_is_one_line(capfd, monkeypatch, tmp_path,
                                                                           tiny_data_dir, tiny_model_dir):
    result = train_here(capfd, monkeypatch, "data=medquad", "data.group_negatives={field: focus}",
                        "+data.source.local.columns.negative=answer",
                        run_dir=tmp_path, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert_one_line_error(result, "data 'medquad': data.group_negatives adds a negative column")
