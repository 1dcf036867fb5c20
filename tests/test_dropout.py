"""Packed dropout masks: torch's dropout in distribution (the drop rate, the scale, the expected output), seeded
like it, and the default of a training run."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from torch import nn

from embedlab.config import CONF_DIR
from embedlab.errors import ConfigError
from embedlab.modeling.dropout import PackedMaskDropout, use_dropout_masks
from embedlab.modeling.encoder import SentenceEncoder


def test_elements_drop_at_the_rounded_probability_and_the_rest_keep_the_expected_output():
    torch.manual_seed(0)
    layer = PackedMaskDropout(0.1).train()
    ones = torch.ones(1000, 1000)
    output = layer(ones)
    dropped = (output == 0).float().mean().item()
    rounded = 6554 / 65536
    # 1e6 elements: the drop rate's standard deviation is 3e-4.
    assert dropped == pytest.approx(rounded, abs=1.5e-3)
    assert output.unique().tolist() == [0.0, pytest.approx(1 / (1 - rounded))]
    assert output.mean().item() == pytest.approx(1.0, abs=2e-3)
    # Neighbouring elements come from the four 16-bit parts of one draw, and must still drop independently.
    pairs = (output.view(-1, 2) == 0).float()
    assert (pairs[:, 0] * pairs[:, 1]).mean().item() == pytest.approx(rounded**2, abs=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_gradient_passes_where_the_element_was_kept(dtype):
    layer = PackedMaskDropout(0.25).train()
    inputs = torch.randn(4, 7, 9, dtype=dtype, requires_grad=True)
    output = layer(inputs)
    output.sum().backward()
    assert output.dtype == dtype
    kept = output != 0
    assert torch.equal(inputs.grad != 0, kept)
    assert torch.all(inputs.grad[kept] == torch.tensor(65536 / (65536 - 16384), dtype=dtype))


def test_the_seed_decides_the_masks_and_eval_mode_or_p_zero_keeps_the_input():
    layer = PackedMaskDropout(0.5).train()
    inputs = torch.ones(64, 33)
    torch.manual_seed(3)
    first = layer(inputs)
    torch.manual_seed(3)
    assert torch.equal(layer(inputs), first)
    assert not torch.equal(layer(inputs), first)
    assert torch.equal(layer.eval()(inputs), inputs)
    assert torch.equal(PackedMaskDropout(0.0).train()(inputs), inputs)
    assert torch.equal(PackedMaskDropout(1.0).train()(inputs), torch.zeros_like(inputs))


def test_a_backbone_gets_the_masks_it_asks_for(tiny_model_dir):
    def dropout_kinds(encoder):
        return {type(module) for module in encoder.modules() if isinstance(module, nn.Dropout)}

    packed = SentenceEncoder.from_pretrained(tiny_model_dir, dropout_masks="packed")
    assert dropout_kinds(packed) == {PackedMaskDropout}
    assert dropout_kinds(SentenceEncoder.from_pretrained(tiny_model_dir)) == {nn.Dropout}
    use_dropout_masks(packed, "torch")
    assert dropout_kinds(packed) == {nn.Dropout}
    with pytest.raises(ConfigError, match="dropout_masks must be one of packed, torch, got 'fast'"):
        use_dropout_masks(packed, "fast")


@pytest.mark.parametrize("experiment", ["nli_mnr", "cross_encoder_stsb", "tsdae_medquad"])
def test_a_training_run_draws_packed_masks_by_default(tiny_model_dir, experiment):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"backbone.name_or_path={tiny_model_dir}"])
    module = get_class(cfg.model._target_).from_config(cfg)
    kinds = {type(layer) for layer in module.modules() if isinstance(layer, nn.Dropout)}
    assert PackedMaskDropout in kinds
