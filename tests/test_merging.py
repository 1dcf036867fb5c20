"""merge_with_start (WiSE-FT): the saved bi-encoder's weights moved a share of the way back to the starting model's,
and the evaluation after training scores that merged model."""

import json

import pytest
import torch
from cli import assert_one_line_error, train_here
from safetensors.torch import load_file
from torch import nn

from embedlab.errors import ConfigError
from embedlab.modeling.merging import interpolate_weights

RUN = ("data=stsb", "loss=cosine", "trainer.max_steps=3", "optim.lr=1e-3", "precision=32-true", "logger=none")


def saved_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def test_the_saved_model_is_the_trained_one_moved_toward_the_start(capfd, monkeypatch, tmp_path, tiny_data_dir,
                                                                   tiny_model_dir):
    runs = {}
    for share in (0.0, 0.25):
        runs[share] = tmp_path / str(share)
        result = train_here(capfd, monkeypatch, *RUN, f"merge_with_start={share}", run_dir=runs[share],
                            data_dir=tiny_data_dir, backbone=tiny_model_dir)
        assert result.returncode == 0, result.stderr[-3000:]
    trained, merged = saved_weights(runs[0.0]), saved_weights(runs[0.25])
    start = load_file(f"{tiny_model_dir}/model.safetensors")
    moved = 0
    for name, weight in trained.items():
        expected = 0.75 * weight + 0.25 * start[name]
        torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6)
        moved += not torch.equal(weight, start[name])
    assert moved > 0
    # The final evaluation scores the merged model, not the trained one.
    results = [json.loads((runs[share] / "results.json").read_text()) for share in (0.0, 0.25)]
    assert results[0]["test/stsb/spearman_cosine"] != results[1]["test/stsb/spearman_cosine"]


def test_a_cross_encoder_is_not_merged_and_says_so_in_one_line(capfd, monkeypatch, tmp_path, tiny_data_dir,
                                                               tiny_model_dir):
    result = train_here(capfd, monkeypatch, "experiment=cross_encoder_stsb", "merge_with_start=0.5",
                        run_dir=tmp_path, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert_one_line_error(result, "merge_with_start: only a bi-encoder that trains its own weights")


def test_a_model_of_another_shape_is_no_starting_model():
    with pytest.raises(ConfigError, match="not the model this one was trained from"):
        interpolate_weights(nn.Linear(4, 3), nn.Linear(4, 2), 0.5)
