import json
from collections import Counter

import pytest
import torch

from embedlab.data.nli import NLIDataModule, nli_pairs, nli_triplets
from embedlab.data.sampler import ShardedBatchSampler
from embedlab.data.sources import load_source, read_local, sample_texts
from embedlab.errors import ConfigError, DataError
from embedlab.losses import (
    CosineSimilarityLoss,
    MultipleNegativesRankingLoss,
    SoftmaxLoss,
    TripletLoss,
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def nli_row(premise, hypothesis, label):
    return {"premise": premise, "hypothesis": hypothesis, "label": label, "pairID": "x"}


def test_nli_triplets_pair_entailment_with_contradiction_per_premise():
    rows = [
        nli_row("A man plays.", "A person plays.", "entailment"),
        nli_row("A man plays.", "A man is outside.", "neutral"),
        nli_row("A man plays.", "A man sleeps.", "contradiction"),
        nli_row("A dog runs.", "An animal runs.", "entailment"),  # no contradiction: no triplet
        nli_row("A cat sits.", "A cat sits down.", "-"),  # unlabelled
        nli_row("A cat sits.", "A cat stands.", "contradiction"),
    ]
    assert nli_triplets(rows) == [{"anchor": "A man plays.", "positive": "A person plays.", "negative": "A man sleeps."}]
    pairs = nli_pairs(rows)
    assert [pair["label"] for pair in pairs] == [0, 1, 2, 0, 2]
    assert pairs[2] == {"sentence1": "A man plays.", "sentence2": "A man sleeps.", "label": 2}


def test_nli_module_picks_triplets_for_mnr_and_pairs_for_softmax(tmp_path):
    files = []
    for protocol in ("base", "lots"):
        rows = []
        for i in range(4):
            rows += [nli_row(f"premise {i}", f"{protocol} entailed {i}", "entailment"),
                     nli_row(f"premise {i}", f"{protocol} neutral {i}", "neutral"),
                     nli_row(f"premise {i}", f"{protocol} contradicted {i}", "contradiction")]
        files.append({"path": str(write_jsonl(tmp_path / f"{protocol}.jsonl", rows))})
    columns = {"premise": "premise", "hypothesis": "hypothesis", "label": "label"}

    module = NLIDataModule(files=files, columns=columns, name="nli")
    assert module.fit_loss("mnr", MultipleNegativesRankingLoss) == ["anchor", "positive", "negative"]
    triplets, _ = module.load_train(module.format)
    assert len(triplets) == 8  # one per premise in each file
    assert triplets[4] == {"anchor": "premise 0", "positive": "lots entailed 0", "negative": "lots contradicted 0"}

    module = NLIDataModule(files=files, columns=columns, name="nli")
    assert module.fit_loss("softmax", SoftmaxLoss) == ["sentence1", "sentence2"]
    pairs, _ = module.load_train(module.format)
    assert len(pairs) == 24 and Counter(p["label"] for p in pairs) == {0: 8, 1: 8, 2: 8}

    module = NLIDataModule(files=files, columns=columns, name="nli", hard_negatives=False)
    assert module.fit_loss("mnr", MultipleNegativesRankingLoss) == ["anchor", "positive"]
    positives, _ = module.load_train(module.format)
    assert positives == [{"anchor": t["anchor"], "positive": t["positive"]} for t in triplets]


def test_nli_module_refuses_a_scored_loss_before_loading(tmp_path):
    module = NLIDataModule(files=[{"path": str(tmp_path / "absent.jsonl")}], columns={}, name="nli")
    with pytest.raises(ConfigError, match=r"loss 'cosine' needs columns \(sentence1, sentence2, score\) but data 'nli'"):
        module.fit_loss("cosine", CosineSimilarityLoss)


def test_no_duplicate_text_within_a_batch():
    # Ten premises with three hypotheses each: a plain shuffle would put a premise twice in many batches.
    rows = [(f"premise {p}", f"hypothesis {p}-{h}", f"negative {p}-{h}") for p in range(10) for h in range(3)]
    sampler = ShardedBatchSampler(rows, batch_size=7, unique_texts=True, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        texts = [text for index in batch for text in rows[index]]
        assert len(texts) == len(set(texts)), batch
    assert sorted(index for batch in batches for index in batch) == list(range(len(rows)))


def test_a_text_on_more_rows_than_batches_leaves_the_extra_rows_out(caplog):
    # One answer on 20 of 44 rows, as MedQuAD's autosomal-recessive answer stands on 282: batches of 8 hold it once
    # each, so a plain no-duplicates pass would end in a tail of one-row batches with nothing to contrast.
    rows = [(f"question {i}", "the shared answer" if i < 20 else f"answer {i}") for i in range(44)]
    with caplog.at_level("WARNING", logger="embedlab.data.sampler"):
        sampler = ShardedBatchSampler(rows, batch_size=8, unique_texts=True, seed=2)
        batches = list(sampler)
    assert len(batches) == len(sampler) == 4
    assert [len(batch) for batch in batches] == [8, 8, 8, 4]
    seen = [index for batch in batches for index in batch]
    assert sum(index < 20 for index in seen) == 4 and len(set(seen)) == 28
    assert "16 of 44 rows left out" in caplog.text and "'the shared answer', on 16 of them" in caplog.text


def test_batches_of_one_row_are_kept_when_asked_for():
    rows = [(f"question {i}", "the shared answer") for i in range(5)]
    assert [len(batch) for batch in ShardedBatchSampler(rows, batch_size=1, unique_texts=True, seed=0)] == [1] * 5
    assert len(ShardedBatchSampler(rows, batch_size=4, unique_texts=True, seed=0)) == 1


def test_plain_shuffle_would_repeat_premises():
    rows = [(f"premise {p}", f"hypothesis {p}-{h}") for p in range(10) for h in range(3)]
    batches = list(ShardedBatchSampler(rows, batch_size=8, unique_texts=False, seed=3))
    repeated = [b for b in batches if len({rows[i][0] for i in b}) < len(b)]
    assert repeated, "the sampler without unique_texts should not be filtering"


def assert_one_global_batch_per_step(rows, shards, batch_size):
    """Each step the ranks' batches are full, share no text and no row is seen twice across ranks."""
    assert len(shards[0]) == len(shards[1]) > 0
    for local_0, local_1 in zip(*shards):
        assert len(local_0) == len(local_1) == batch_size
        texts = [text for index in local_0 + local_1 for text in rows[index]]
        assert len(texts) == len(set(texts))
    seen = [index for shard in shards for batch in shard for index in batch]
    assert len(seen) == len(set(seen))


def test_sharded_batches_split_one_global_batch_across_ranks():
    rows = [(f"premise {p}", f"hypothesis {p}-{h}") for p in range(20) for h in range(2)]
    shards = [list(ShardedBatchSampler(rows, batch_size=4, unique_texts=True, seed=1, rank=r, world_size=2))
              for r in range(2)]
    assert_one_global_batch_per_step(rows, shards, batch_size=4)


def test_sampler_reshuffles_per_epoch():
    rows = [(f"text {i}",) for i in range(64)]
    sampler = ShardedBatchSampler(rows, batch_size=8, unique_texts=True, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_lightning_reaches_the_sampler_epoch_through_the_dataloader():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    rows = [(f"text {i}",) for i in range(64)]
    sampler = ShardedBatchSampler(rows, batch_size=8, unique_texts=True, seed=0)
    loader = DataLoader(rows, batch_sampler=sampler, collate_fn=list)
    first = list(loader)
    _set_sampler_epoch(loader, 1)
    assert list(loader) != first


def test_stsb_style_tsv_with_extra_columns_and_stray_quotes(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text('main-news\tf\t2012\t1\t4.0\tHe said "yes.\tHe agreed.\n'
                    'main-news\tf\t2012\t2\t1.5\tA cat.\tA dog.\tsrc1\tsrc2\n')
    rows = read_local(str(path), {"sentence1": 5, "sentence2": 6, "score": 4}, delimiter="\t", quoting="none",
                      header=False, score_range=(0, 5))
    assert rows == [{"sentence1": 'He said "yes.', "sentence2": "He agreed.", "score": 0.8},
                    {"sentence1": "A cat.", "sentence2": "A dog.", "score": 0.3}]


def test_sampled_texts_are_distinct_seeded_and_read_every_text_column_but_no_score(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("a cat\ta dog\t0.1\na dog\ta bird\t0.2\na fish\ta cat\t0.3\n")
    source = {"local": {"path": str(path), "delimiter": "\t", "header": False,
                        "columns": {"sentence1": 0, "sentence2": 1, "score": 2}}}
    every = sample_texts(source, "calibration texts", 10, seed=0)
    assert sorted(every) == ["a bird", "a cat", "a dog", "a fish"]
    two = sample_texts(source, "calibration texts", 2, seed=1)
    assert len(two) == 2 and two == sample_texts(source, "calibration texts", 2, seed=1)
    assert {tuple(sample_texts(source, "calibration texts", 2, seed=seed)) for seed in range(10)} != {tuple(two)}


def test_missing_column_names_the_file_and_what_is_there(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "a", "doc": "b"}])
    with pytest.raises(DataError, match=r"pairs.jsonl:1: missing column 'positive'.*query, doc"):
        read_local(str(path), {"anchor": "query", "positive": "positive"})


def test_empty_text_names_file_line_and_column(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("s1,s2,score\nA man.,A person.,0.5\nA dog.,  ,0.1\n")
    with pytest.raises(DataError, match=r"pairs.csv:3: empty or non-text value '  ' in column 'sentence2'"):
        read_local(str(path), {"sentence1": "s1", "sentence2": "s2", "score": "score"})


def test_non_numeric_score_is_an_error(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("s1,s2,score\nA man.,A person.,high\n")
    with pytest.raises(DataError, match=r"pairs.csv:2: score 'high' is not a number"):
        read_local(str(path), {"sentence1": "s1", "sentence2": "s2", "score": "score"})


def test_unreachable_hub_without_local_file_says_how_to_point_at_local_data(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    source = {"local": {"path": "/no/such/dir/sts-train.csv", "columns": {}},
              "hub": {"id": "sentence-transformers/stsb", "split": "train", "columns": {}}}
    with pytest.raises(DataError) as caught:
        load_source(source, "data 'stsb'")
    message = str(caught.value)
    assert "/no/such/dir/sts-train.csv" in message
    assert "paths.data_dir" in message and "EMBEDLAB_DATA_DIR" in message
    assert "\n" not in message


def test_triplet_loss_takes_exactly_one_negative():
    assert TripletLoss.signature.text_columns(("anchor", "positive", "negative")) == ["anchor", "positive", "negative"]
    assert TripletLoss.signature.text_columns(("anchor", "positive", "negative", "negative_1")) is None


def test_scores_are_rescaled_from_their_range(tmp_path):
    path = tmp_path / "SICK_train.txt"
    path.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\n1\tA kid plays.\tA child plays.\t5.0\n"
                    "2\tA kid plays.\tA man sleeps.\t1.0\n3\tA dog runs.\tA dog walks.\t3.0\n")
    rows = read_local(str(path), {"sentence1": "sentence_A", "sentence2": "sentence_B", "score": "relatedness_score"},
                      quoting="none", score_range=(1, 5))
    assert [row["score"] for row in rows] == [1.0, 0.0, 0.5]


def varied_length_rows(premises: int = 40, hypotheses: int = 3) -> list[tuple[str, str]]:
    """Premises of 1 to 40 words, each with several hypotheses: repeated texts and a wide spread of lengths."""
    return [(f"premise {p} " + "word " * (1 + (p * 7) % 40), f"hypothesis {p}-{h}")
            for p in range(premises) for h in range(hypotheses)]


def row_length(row: tuple[str, ...]) -> int:
    return sum(len(text) for text in row)


def mean_length_spread(rows, batches) -> float:
    return sum(max(row_length(rows[i]) for i in b) - min(row_length(rows[i]) for i in b) for b in batches) / len(
        batches)


def test_length_grouped_batches_are_unique_homogeneous_and_cover_every_row():
    rows = varied_length_rows()
    grouped = list(ShardedBatchSampler(rows, batch_size=8, unique_texts=True, seed=5, group_by_length=True,
                                       length_group_batches=16))
    for batch in grouped:
        texts = [text for index in batch for text in rows[index]]
        assert len(texts) == len(set(texts)), batch
    assert sorted(index for batch in grouped for index in batch) == list(range(len(rows)))
    plain = list(ShardedBatchSampler(rows, batch_size=8, unique_texts=True, seed=5))
    assert mean_length_spread(rows, grouped) < 0.35 * mean_length_spread(rows, plain)


def test_length_grouped_order_is_fixed_by_seed_and_epoch_and_still_shuffled():
    rows = varied_length_rows()

    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = ShardedBatchSampler(rows, batch_size=8, unique_texts=True, seed=seed, group_by_length=True,
                                      length_group_batches=4)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(1, 0) == batches(1, 0)
    assert batches(1, 1) != batches(1, 0)
    assert batches(2, 0) != batches(1, 0)
    # The groups are sorted longest first, but the batches are shuffled: lengths do not simply fall through an epoch.
    first_lengths = [row_length(rows[batch[0]]) for batch in batches(1, 0)]
    assert first_lengths != sorted(first_lengths, reverse=True)


def test_length_grouped_batches_shard_one_global_batch_and_resume_by_skipping():
    rows = varied_length_rows()
    shards = [list(ShardedBatchSampler(rows, batch_size=4, unique_texts=True, seed=1, rank=r, world_size=2,
                                       group_by_length=True, length_group_batches=4)) for r in range(2)]
    assert_one_global_batch_per_step(rows, shards, batch_size=4)

    resumed = ShardedBatchSampler(rows, batch_size=4, unique_texts=True, seed=1, rank=0, world_size=2,
                                  group_by_length=True, length_group_batches=4, batches_done=lambda epoch: 3)
    assert list(resumed) == shards[0][3:]


def test_collator_pads_each_batch_to_its_longest_text_in_worker_processes(tiny_model_dir):
    from torch.utils.data import DataLoader

    from embedlab.data.collate import Collator
    from embedlab.modeling.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    rows = [{"anchor": "a man plays", "positive": "a man plays the guitar in the park"},
            {"anchor": "a dog", "positive": "the dog runs"},
            {"anchor": "the young boy rides a red bike", "positive": "a boy rides"},
            {"anchor": "a cat", "positive": "a cat sleeps"}]
    collate = Collator(encoder.tokenize, ["anchor", "positive"])
    in_main = list(DataLoader(rows, batch_size=2, collate_fn=collate))
    in_worker = list(DataLoader(rows, batch_size=2, collate_fn=collate, num_workers=1))
    for main_batch, worker_batch in zip(in_main, in_worker, strict=True):
        for column in ("anchor", "positive"):
            ids = main_batch["features"][column]["input_ids"]
            assert torch.equal(ids, worker_batch["features"][column]["input_ids"])
            assert main_batch["features"][column]["attention_mask"][:, -1].any(), "padded beyond the longest text"
    assert in_main[0]["features"]["anchor"]["input_ids"].shape[1] < in_main[0]["features"]["positive"][
        "input_ids"].shape[1]
