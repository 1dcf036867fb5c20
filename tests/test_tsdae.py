"""TSDAE on the tiny BERT: the deletion noise, the tied decoder, learning to rebuild, and the saved encoder."""

import json
import random
import shutil
from types import SimpleNamespace

import pytest
import torch
from cli import run_train, train_here
from conftest import sentence
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors import safe_open

from embedlab.config import CONF_DIR
from embedlab.data.noise import DenoisingCollator, delete_words, noise_generator
from embedlab.errors import ConfigError
from embedlab.evaluation.datasets import ScoredPairs
from embedlab.evaluation.sts import STSEvaluator
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.objectives.tsdae import TSDAEModule, build_decoder, check_decoder_tokens
from embedlab.recipes.stages import check_stages, evaluate_stage

TEXTS = ["the man plays the guitar in the park", "a woman sings a happy song at home",
         "two children play with a ball outside", "the old dog sleeps in the big house"]


def tsdae_config(backbone: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["model=tsdae", "data=corpus", "pooling=cls",
                                           f"backbone.name_or_path={backbone}", *overrides])


def tsdae_module(backbone: str, *overrides: str) -> TSDAEModule:
    return TSDAEModule.from_config(tsdae_config(backbone, *overrides))


def test_deletion_ratio_holds_over_many_sentences():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(30)]
    kept = total = 0
    for index in range(2000):
        sentence = rng.sample(words, 20)
        noisy = delete_words(" ".join(sentence), 0.6, noise_generator(1, 0, index))
        kept += len(noisy.split())
        total += len(sentence)
        assert set(noisy.split()) <= set(sentence)
    assert abs(1 - kept / total - 0.6) < 0.01


def test_deletion_keeps_at_least_one_word():
    for index in range(500):
        noisy = delete_words("just three words", 0.99, noise_generator(0, 0, index))
        assert len(noisy.split()) >= 1
    assert delete_words("single", 0.99, noise_generator(0, 0, 0)) == "single"


def test_noise_is_deterministic_per_seed_epoch_and_row(tiny_model_dir):
    tokenize = SentenceEncoder.load(tiny_model_dir).tokenize
    rows = [{"text": text, "epoch": 0, "index": index} for index, text in enumerate(TEXTS * 5)]

    def noisy_ids(seed, epoch=0):
        batch = DenoisingCollator(tokenize, 0.6, seed)([{**row, "epoch": epoch} for row in rows])
        return batch["features"]["noisy"]["input_ids"]

    assert torch.equal(noisy_ids(7), noisy_ids(7))
    assert not torch.equal(noisy_ids(7), noisy_ids(8))
    assert not torch.equal(noisy_ids(7), noisy_ids(7, epoch=1))
    # A row's noise does not depend on which batch (or worker) collates it.
    alone = DenoisingCollator(tokenize, 0.6, 7)([rows[3]])["features"]["noisy"]["input_ids"][0]
    assert torch.equal(alone[alone != 0], noisy_ids(7)[3][noisy_ids(7)[3] != 0])


def test_decoder_shares_the_encoders_tensors_by_identity(tiny_model_dir):
    module = tsdae_module(tiny_model_dir)
    encoder = dict(module.encoder.backbone.named_parameters())
    decoder = dict(module.decoder.base_model.named_parameters(remove_duplicate=False))
    shared = [name for name in decoder if name in encoder]
    assert shared and all(decoder[name] is encoder[name] for name in shared)
    assert module.decoder.get_output_embeddings().weight is encoder["embeddings.word_embeddings.weight"]
    cross_attention = [name for name in decoder if "crossattention" in name]
    assert cross_attention and not any(name in encoder for name in cross_attention)
    # Everything the encoder has except its unused pooler is shared.
    assert set(encoder) - set(shared) == {name for name in encoder if name.startswith("pooler.")}

    untied = tsdae_module(tiny_model_dir, "model.tie_encoder_decoder=false")
    word_embeddings = "embeddings.word_embeddings.weight"
    assert untied.decoder.base_model.get_parameter(word_embeddings) is not (
        untied.encoder.backbone.get_parameter(word_embeddings))


def test_training_steps_reduce_the_reconstruction_loss(tiny_model_dir, one_thread):
    torch.manual_seed(0)
    module = tsdae_module(tiny_model_dir)
    collate = module.make_collator(["text"], None, {})
    batch = collate([{"text": text, "epoch": 0, "index": index} for index, text in enumerate(TEXTS)])
    optimizer = torch.optim.AdamW(module.parameters(), lr=5e-3)
    module.eval()  # no dropout, so the losses compare the same function
    losses = []
    for _ in range(20):
        loss = module.reconstruction_loss(batch["features"]["noisy"], batch["features"]["text"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_decoder_dropout_switches_off_for_the_decoder_alone(tiny_model_dir, one_thread):
    module = tsdae_module(tiny_model_dir, "model.decoder_dropout=false")
    module.eval()
    module.train()  # as Lightning does after validation
    assert module.training and module.encoder.backbone.training and not module.decoder.training
    assert not any(m.training for m in module.decoder.modules())
    collate = module.make_collator(["text"], None, {})
    features = collate([{"text": text, "epoch": 0, "index": i} for i, text in enumerate(TEXTS)])["features"]
    embedding = module.encoder(features["noisy"])[:, None]
    ids = features["text"]["input_ids"]
    logits = [module.decoder(input_ids=ids, encoder_hidden_states=embedding).logits for _ in range(2)]
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)
    # The default keeps dropout in the decoder: the same input decodes differently each time.
    dropping = tsdae_module(tiny_model_dir)
    assert dropping.decoder.training
    torch.manual_seed(0)
    first, second = (dropping.decoder(input_ids=ids, encoder_hidden_states=embedding.detach()).logits
                     for _ in range(2))
    assert not torch.equal(first, second)


def test_frozen_lower_layers_stay_put_and_freeze_their_tied_copies(tiny_model_dir):
    module = tsdae_module(tiny_model_dir, "model.freeze_layers=1")
    backbone = module.encoder.backbone
    assert not any(p.requires_grad for p in backbone.embeddings.parameters())
    assert not any(p.requires_grad for p in backbone.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in backbone.encoder.layer[1].parameters())
    assert not module.decoder.base_model.encoder.layer[0].attention.self.query.weight.requires_grad
    assert module.decoder.base_model.encoder.layer[0].crossattention.self.query.weight.requires_grad
    with pytest.raises(ConfigError, match="backbone has 2 layers"):
        tsdae_module(tiny_model_dir, "model.freeze_layers=3")


def test_saved_encoder_loads_in_sentence_transformers(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    module = tsdae_module(tiny_model_dir)
    module.save_model(tmp_path / "model")
    saved = safe_open(tmp_path / "model" / "model.safetensors", "pt").keys()
    assert not any("crossattention" in key or key.startswith("cls.") for key in saved)
    ours = SentenceEncoder.load(tmp_path / "model").encode(TEXTS)
    theirs = SentenceTransformer(str(tmp_path / "model"), device="cpu").encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(theirs.cpu(), ours, atol=1e-5, rtol=1e-4)
    assert json.loads((tmp_path / "model" / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"]


def test_tokenizer_without_the_decoders_special_tokens_is_refused(tiny_model_dir):
    tokenizer = SentenceEncoder.load(tiny_model_dir).tokenizer
    check_decoder_tokens(tokenizer, "tiny")
    tokenizer.pad_token = None
    with pytest.raises(ConfigError, match="backbone 'tiny': TSDAE's decoder needs a padding token"):
        check_decoder_tokens(tokenizer, "tiny")


def test_backbone_without_a_causal_lm_form_is_refused(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    DistilBertModel(DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=37)).save_pretrained(
        tmp_path)
    with pytest.raises(ConfigError, match="has no causal-LM form with cross-attention"):
        build_decoder(str(tmp_path))


@pytest.mark.slow
def test_domain_adaptation_pipeline_from_a_plain_bert_reports_every_stage(tmp_path, tiny_data_dir, tiny_model_dir):
    data_dir = tmp_path / "data"
    for folder in ("stsbenchmark", "nli_ling_in_loop"):
        shutil.copytree(tiny_data_dir / folder, data_dir / folder)
    rng = random.Random(1)
    pairs = [(sentence(rng), sentence(rng)) for _ in range(12)]
    (data_dir / "biosses").mkdir()
    (data_dir / "biosses" / "biosses_sentence_pairs_test_derived_from_github.txt").write_text(
        "".join(f"{first}\n{second}\n" for first, second in pairs))
    (data_dir / "biosses" / "annotation_scores_from_github.txt").write_text(
        "".join(f"{rng.uniform(0, 4):.1f}\n" for _ in pairs))
    (data_dir / "biomed_hoc_pubmed_sentences").mkdir()
    (data_dir / "biomed_hoc_pubmed_sentences" / "hoc_text_concat.txt").write_text(
        "".join(f"{sentence(rng)}\n" for _ in range(30)))

    # The TSDAE stage is a training run of `model=tsdae data=corpus ...` from the plain tiny BERT.
    run_dir = tmp_path / "run"
    result = run_train("experiment=tsdae_biomed", "~domain_adapt.evaluation.sickr", "~domain_adapt.evaluation.pubmedqa",
                       "~domain_adapt.evaluation.liveqa_med",
                       "domain_adapt.tsdae_max_steps=3", "domain_adapt.freeze_layers=1",
                       'domain_adapt.supervised=["experiment=nli_mnr","pooling=cls","trainer.max_steps=2",'
                       '"data.batch_size=8"]', "domain_adapt.supervised_control=true",
                       run_dir=run_dir, data_dir=data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    for stage in ("base", "tsdae", "tsdae_supervised", "supervised"):
        for key in ("test/biosses/spearman_cosine", "test/stsb/spearman_cosine"):
            assert -1 <= results[f"{stage}/{key}"] <= 1
        assert (run_dir / stage / "evaluation.json").exists()
    tsdae_run = json.loads((run_dir / "tsdae" / "results.json").read_text())
    assert -1 <= tsdae_run["test/stsb/spearman_cosine"] <= 1 and tsdae_run["data/sentences"] == 30
    trained = SentenceEncoder.load(run_dir / "tsdae" / "model")
    assert trained.pooling == "mean"
    assert not torch.allclose(trained.encode(TEXTS), SentenceEncoder.load(tiny_model_dir, pooling="mean").encode(TEXTS))
    assert SentenceEncoder.load(run_dir / "tsdae_supervised" / "model").pooling == "cls"
    supervised_config = OmegaConf.load(run_dir / "tsdae_supervised" / "config.yaml")
    assert supervised_config.backbone.name_or_path == str(run_dir / "tsdae" / "model")
    assert supervised_config.loss._target_.endswith("MultipleNegativesRankingLoss")
    control_config = OmegaConf.load(run_dir / "supervised" / "config.yaml")
    assert control_config.backbone.name_or_path == tiny_model_dir
    assert control_config.loss == supervised_config.loss and control_config.data == supervised_config.data
    table = result.stdout[result.stdout.index("Domain adaptation"):].splitlines()
    assert table[1].split() == ["stage", "test/biosses/spearman_cosine", "test/stsb/spearman_cosine",
                                "test/liveqa-med/ndcg@10"]
    assert [line.split()[0] for line in table[2:6]] == ["base", "tsdae", "tsdae_supervised", "supervised"]
    assert table[2].split()[1] == f"{results['base/test/biosses/spearman_cosine']:.4f}"


def test_an_evaluated_stage_is_not_evaluated_again(tmp_path):
    (tmp_path / "tsdae").mkdir()
    (tmp_path / "tsdae" / "evaluation.json").write_text('{"test/biosses/spearman_cosine": 0.5}')
    # The model path does not exist: reading it would fail, so the cached metrics must be returned.
    done = SimpleNamespace(name="test/biosses")
    assert evaluate_stage("tsdae", tmp_path / "no_model", {"biosses": done}, tmp_path) == \
        {"test/biosses/spearman_cosine": 0.5}


def test_a_rerun_with_another_evaluator_adds_only_its_metrics(tmp_path, tiny_model_dir):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "evaluation.json").write_text('{"test/biosses/spearman_cosine": 0.5}')
    pairs = ScoredPairs(["a dog runs", "a cat sleeps", "a man sings"],
                        ["a dog is running", "the stock fell", "someone sings"], [4.0, 0.5, 3.5])
    stsb = STSEvaluator(name="test/stsb", pairs=pairs)
    metrics = evaluate_stage("base", tiny_model_dir, {"biosses": SimpleNamespace(name="test/biosses"),
                                                      "stsb_test": stsb}, tmp_path)
    assert metrics["test/biosses/spearman_cosine"] == 0.5 and -1 <= metrics["test/stsb/spearman_cosine"] <= 1
    assert json.loads((tmp_path / "base" / "evaluation.json").read_text()) == metrics


@pytest.mark.parametrize("experiment", ["tsdae_biomed", "tsdae_medquad"])
def test_every_stage_of_a_domain_adaptation_experiment_composes(experiment):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        settings = compose("train", overrides=[f"experiment={experiment}"]).domain_adapt
        check_stages(settings.tsdae, settings.supervised)


def test_a_stage_override_the_config_lacks_stops_domain_adaptation_before_any_stage(
        tmp_path, tiny_data_dir, tiny_model_dir, capfd, monkeypatch):
    run_dir = tmp_path / "run"
    result = train_here(capfd, monkeypatch, "experiment=tsdae_biomed", "+domain_adapt.evaluators=[stsb_test]",
                        'domain_adapt.supervised=["experiment=nli_mnr","data.no_such_key=1"]',
                        run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode != 0 and "data.no_such_key" in result.stderr
    assert not (run_dir / "base").exists()
