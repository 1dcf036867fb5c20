"""What large backbones need: gradient checkpointing (the same gradients for less memory) and sharded
strategies, which torch's FSDP runs on GPUs only."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from peft import LoraConfig
from torch import nn

from embedlab.config import CONF_DIR
from embedlab.errors import ConfigError
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.objectives.bi_encoder import BiEncoderModule
from embedlab.objectives.sharding import check_strategy

TEXTS = ["a man plays the guitar", "the dog runs in the park", "two children play with a ball"]


def compose_train(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def gradients(encoder: SentenceEncoder) -> tuple[dict[str, torch.Tensor], int]:
    """The gradients of a training step without dropout (both runs must see the same network), and how often the
    first layer's first block ran: checkpointing (on in train mode only) runs the layer again in backward."""
    encoder.train()
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    layers = next(module for module in encoder.backbone.modules() if isinstance(module, nn.ModuleList))
    calls = []
    # Hooks on the layer itself stay outside transformers' checkpoint; its blocks' run again in the recompute.
    next(layers[0].children()).register_forward_hook(lambda *args: calls.append(1))
    encoder(encoder.tokenize(TEXTS)).square().sum().backward()
    return {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("backbone", ["tiny_model_dir", "tiny_qwen2_dir"])
@pytest.mark.parametrize("adapter", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients(request, backbone, adapter):
    path = request.getfixturevalue(backbone)
    plain, checkpointed = (SentenceEncoder.load(path, gradient_checkpointing=flag) for flag in (False, True))
    for encoder in (plain, checkpointed) if adapter else ():
        torch.manual_seed(0)
        encoder.add_adapter(LoraConfig(r=4, init_lora_weights=False))  # random B, so the adapter shapes the output
    (expected, plain_calls), (got, checkpointed_calls) = gradients(plain), gradients(checkpointed)
    assert (plain_calls, checkpointed_calls) == (1, 2)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_checkpointing_from_the_config(tiny_model_dir):
    module = BiEncoderModule.from_config(compose_train(f"backbone.name_or_path={tiny_model_dir}",
                                                       "backbone.gradient_checkpointing=true"))
    assert module.encoder.backbone.is_activation_checkpointing


@pytest.mark.skipif(torch.cuda.is_available(), reason="FSDP runs on GPUs")
@pytest.mark.parametrize("trainer", ["trainer=cpu", "trainer=ddp_cpu", "trainer=ddp"])
def test_fsdp_without_gpus_stops_with_one_clear_line(trainer):
    with pytest.raises(ConfigError, match="trainer.strategy=fsdp needs GPUs: torch's FSDP does not run on CPU"):
        check_strategy(compose_train(trainer, "trainer.strategy=fsdp").trainer)


def test_other_strategies_pass_the_check():
    check_strategy(compose_train("trainer=ddp_cpu").trainer)
