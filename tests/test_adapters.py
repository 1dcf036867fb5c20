"""PEFT adapters: only the adapter trains, and both saved forms (the adapter alone, merged weights) load in
SentenceTransformer with our embeddings."""

import json

import pytest
import torch
from cli import run_train
from hydra import compose, initialize_config_dir
from peft import LoraConfig
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from embedlab.config import CONF_DIR
from embedlab.errors import ConfigError
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.objectives.bi_encoder import BiEncoderModule

TEXTS = ["the man plays in the park.", "a cat sleeps at home.", "two children play with a ball"]


def assert_sentence_transformers_agrees(folder, ours: torch.Tensor) -> None:
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(theirs.cpu(), ours, rtol=0, atol=1e-5)


def test_only_adapter_weights_train(tiny_model_dir):
    encoder = SentenceEncoder.load(tiny_model_dir, normalize=True)
    encoder.add_adapter(LoraConfig(r=4, target_modules=["query", "value"]))
    trainable = [name for name, parameter in encoder.named_parameters() if parameter.requires_grad]
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)


def test_an_adapter_on_a_static_model_is_refused(tiny_model_dir, tmp_path):
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from transformers import AutoTokenizer

    static = StaticEmbedding(AutoTokenizer.from_pretrained(tiny_model_dir), embedding_dim=8)
    SentenceTransformer(modules=[static], device="cpu").save(str(tmp_path / "static"))
    with pytest.raises(ConfigError, match="starts with a StaticEmbedding, not a transformer backbone"):
        SentenceEncoder.load(tmp_path / "static").add_adapter(LoraConfig(r=4))


@pytest.mark.slow
def test_lora_run_changes_only_the_adapter_and_both_saved_forms_load(tmp_path, tiny_data_dir, tiny_model_dir):
    run_dir = tmp_path / "run"
    result = run_train("experiment=nli_mnr", "+adapter=lora", "adapter.r=4", "trainer.max_steps=4",
                       "eval_every_n_steps=4", run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    # The checkpoint holds every weight: the base ones are the starting model's, bit for bit; the adapter moved.
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    base = load_file(f"{tiny_model_dir}/model.safetensors")
    adapter = {name: value for name, value in state.items() if "lora_" in name}
    assert adapter and any("lora_B" in name and value.abs().sum() > 0 for name, value in adapter.items()), \
        "the adapter did not train (lora_B starts at zero)"
    frozen = {name: value for name, value in state.items() if "lora_" not in name}
    assert len(frozen) == len(base)
    for name, value in frozen.items():
        weight_name = name.split("base_model.model.")[-1].replace(".base_layer", "")
        assert torch.equal(value, base[weight_name]), f"{name} changed"

    # Saved as the adapter alone, naming its base model, in the layout sentence-transformers' PEFT support reads.
    model_dir = run_dir / "model"
    assert (model_dir / "adapter_model.safetensors").is_file() and not (model_dir / "model.safetensors").exists()
    assert json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny_model_dir
    trained = SentenceEncoder.load(model_dir)
    ours = trained.encode(TEXTS)
    assert not torch.allclose(ours, SentenceEncoder.load(tiny_model_dir).encode(TEXTS), atol=1e-4)
    assert_sentence_transformers_agrees(model_dir, ours)

    # Merged into full weights: a plain folder, no base model needed.
    merged_dir = trained.save(tmp_path / "merged", merge_adapters=True)
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()
    assert not any("lora" in name for name in load_file(merged_dir / "model.safetensors"))
    assert_sentence_transformers_agrees(merged_dir, ours)
    torch.testing.assert_close(SentenceEncoder.load(merged_dir).encode(TEXTS), ours, rtol=0, atol=1e-5)


def bi_encoder(backbone: str, *overrides: str) -> BiEncoderModule:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return BiEncoderModule.from_config(compose("train", overrides=[
            f"backbone.name_or_path={backbone}", "+adapter=lora", *overrides]))


@pytest.mark.parametrize("save_merged", [False, True])
def test_save_merged_chooses_the_saved_form(tiny_model_dir, tmp_path, save_merged):
    module = bi_encoder(tiny_model_dir, f"save_merged={str(save_merged).lower()}", "adapter.r=4")
    assert module.encoder.backbone.peft_config["default"].r == 4
    module.save_model(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file() == save_merged
    assert (tmp_path / "model" / "adapter_config.json").is_file() != save_merged


def test_an_adapter_naming_missing_modules_is_a_config_error(tiny_model_dir):
    with pytest.raises(ConfigError, match="adapter: .*q_proj"):
        bi_encoder(tiny_model_dir, "adapter.target_modules=[q_proj]")
