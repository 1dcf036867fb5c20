"""End-to-end runs of `python train.py` on the tiny model and tiny data in the ../shared/data layout."""

import json

import pytest
import torch
from cli import assert_one_line_error, run_train, train_here

from embedlab.modeling.encoder import SentenceEncoder


@pytest.mark.slow
def test_stsb_cosine_run_writes_the_run_contract(tmp_path, tiny_data_dir, tiny_model_dir):
    run_dir = tmp_path / "run"
    result = run_train("experiment=stsb_cosine", "eval_every_n_steps=2", "logger=csv",
                       run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads((run_dir / "results.json").read_text())
    for key in ("dev/stsb/spearman_cosine", "dev/stsb/pearson_cosine", "test/stsb/spearman_cosine",
                "test/stsb/pearson_cosine", "train/samples_per_second"):
        assert key in results
    assert -1 <= results["test/stsb/spearman_cosine"] <= 1
    assert results["train/samples_per_second"] > 0
    assert results["train/seconds_per_step"] > 0
    assert results["train/peak_rss_mb"] > 100
    assert (run_dir / "config.yaml").exists() and (run_dir / "csv" / "metrics.csv").exists()
    assert "dev/stsb/spearman_cosine" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]

    # The trained weights are what was saved: they differ from the starting backbone.
    from sentence_transformers import SentenceTransformer

    texts = ["the man plays in the park.", "a cat sleeps at home."]
    ours = SentenceEncoder.load(run_dir / "model").encode(texts)
    theirs = SentenceTransformer(str(run_dir / "model"), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(theirs.cpu(), ours, atol=1e-5, rtol=1e-4)
    untrained = SentenceEncoder.load(tiny_model_dir).encode(texts)
    assert not torch.allclose(ours, untrained, atol=1e-4)


@pytest.mark.slow
def test_two_process_ddp_mnr_run_with_offline_wandb(tmp_path, tiny_data_dir, tiny_model_dir):
    run_dir = tmp_path / "run"
    result = run_train("loss=mnr", "data=nli", "trainer=ddp_cpu", "trainer.devices=2", "logger=wandb",
                       run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output
    assert "test/stsb/spearman_cosine" in json.loads((run_dir / "results.json").read_text())
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (run_dir / "model" / "modules.json").exists()


def test_loss_data_mismatch_fails_before_loading_anything(tmp_path, tiny_data_dir, capfd, monkeypatch):
    # The backbone does not exist either: the mismatch must be reported first, before any model loads.
    result = train_here(capfd, monkeypatch, "loss=softmax", "data=stsb", run_dir=tmp_path / "run",
                        data_dir=tiny_data_dir, backbone="/no/such/model")
    assert_one_line_error(result, "loss 'softmax' needs columns (sentence1, sentence2, label) but data 'stsb' "
                                  "provides (sentence1, sentence2, score)")


def test_missing_backbone_path(tmp_path, tiny_data_dir, capfd, monkeypatch):
    result = train_here(capfd, monkeypatch, "data=stsb", "loss=cosine", run_dir=tmp_path / "run",
                        data_dir=tiny_data_dir, backbone="/no/such/model")
    assert_one_line_error(result, "model path '/no/such/model' does not exist")


def test_empty_text_in_a_column(tmp_path, tiny_data_dir, tiny_model_dir, capfd, monkeypatch):
    table = tmp_path / "pairs.csv"
    table.write_text("s1,s2,score\nthe man runs.,a man runs.,0.9\nthe dog sits.,,0.2\n")
    result = train_here(capfd, monkeypatch, "data=pairs", "loss=cosine", f"data.source.local.path={table}",
                        "data.source.local.columns={sentence1: s1, sentence2: s2, score: score}",
                        run_dir=tmp_path / "run", data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert_one_line_error(result, "pairs.csv:3: empty or non-text value '' in column 'sentence2'")


def test_missing_column(tmp_path, tiny_data_dir, tiny_model_dir, capfd, monkeypatch):
    table = tmp_path / "pairs.jsonl"
    table.write_text('{"query": "the man runs.", "answer": "a man runs."}\n')
    result = train_here(capfd, monkeypatch, "data=pairs", "loss=mnr", f"data.source.local.path={table}",
                        "data.source.local.columns={anchor: query, positive: positive}",
                        run_dir=tmp_path / "run", data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert_one_line_error(result, "missing column 'positive'")


def test_no_local_data_and_no_hub_says_how_to_point_at_local_data(tmp_path, tiny_model_dir, capfd, monkeypatch):
    result = train_here(capfd, monkeypatch, "data=stsb", "loss=cosine", run_dir=tmp_path / "run",
                        data_dir=tmp_path / "empty", backbone=tiny_model_dir)
    assert_one_line_error(result, "paths.data_dir")


def test_a_run_without_any_logger(tmp_path, tiny_data_dir, tiny_model_dir, capfd, monkeypatch):
    # The learning-rate monitor refuses a trainer without a logger, so logger=none must take it away.
    result = train_here(capfd, monkeypatch, "experiment=stsb_cosine", "logger=none", "trainer.max_steps=2",
                        run_dir=tmp_path / "run", data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/stsb/spearman_cosine" in json.loads((tmp_path / "run" / "results.json").read_text())


def test_bf16_mixed_training_clips_gradients_without_the_fused_optimiser(tmp_path, tiny_data_dir, tiny_model_dir,
                                                                         capfd, monkeypatch):
    # Lightning refuses a fused optimiser beside gradient clipping under mixed precision.
    result = train_here(capfd, monkeypatch, "data=stsb", "loss=cosine", "precision=bf16-mixed", "trainer.max_steps=3",
                        "evaluation=[]", run_dir=tmp_path / "run", data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
