"""On a GPU (marked `gpu`, skipped without CUDA; scripts/device_check.sh runs them): bf16 and 16-mixed training
steps, torch.compile, trainer=gpu, trainer=ddp with one device, GradCache, and encoding against the CPU."""

import json

import pytest
import torch
import torch.nn.functional as F
from cli import run_train

from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.precision import resolve_precision

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
TEXTS = ["a man plays the guitar", "the dog runs in the park", "two children play with a ball", "a cat sleeps"]


def trained(tmp_path, data_dir, backbone, *overrides: str) -> dict:
    result = run_train("trainer.max_steps=3", "logger=none", *overrides, run_dir=tmp_path, data_dir=data_dir,
                       backbone=backbone, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text())


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_steps_on_the_gpu(precision, tmp_path, tiny_data_dir, tiny_model_dir):
    results = trained(tmp_path, tiny_data_dir, tiny_model_dir, "experiment=stsb_cosine", "trainer=gpu",
                      f"precision={precision}")
    assert -1 <= results["test/stsb/spearman_cosine"] <= 1


def test_ddp_with_one_gpu_and_gradcache(tmp_path, tiny_data_dir, tiny_model_dir):
    results = trained(tmp_path, tiny_data_dir, tiny_model_dir, "data=nli", "loss=cached_mnr",
                      "loss.mini_batch_size=4", "trainer=ddp", "trainer.devices=1", "precision=bf16-mixed")
    assert -1 <= results["test/stsb/spearman_cosine"] <= 1


def test_auto_precision_is_bf16_on_an_ampere_or_later_gpu():
    expected = "bf16-mixed" if torch.cuda.get_device_capability() >= (8, 0) else "32-true"
    assert resolve_precision("auto", "cuda") == expected


def test_a_compiled_training_step_matches_eager(tiny_model_dir):
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        encoder = SentenceEncoder.from_pretrained(tiny_model_dir).cuda().train()
        if compiled:
            encoder.backbone.compile(dynamic=True)
        features = {key: value.cuda() for key, value in encoder.tokenize(TEXTS).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            embeddings = encoder(features)
        loss = F.cosine_similarity(embeddings[0::2], embeddings[1::2]).sum()
        loss.backward()
        losses[compiled] = (loss.item(), encoder.backbone.embeddings.word_embeddings.weight.grad.norm().item())
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_encoding_on_the_gpu_matches_the_cpu(tiny_model_dir):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    on_cpu = encoder.encode(TEXTS)
    on_gpu = encoder.cuda().encode(TEXTS)
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-4, rtol=1e-3)
    fast = encoder.inference_copy("bf16-true", compile=True).encode(TEXTS)
    assert F.cosine_similarity(fast, on_cpu).min() > 0.99
