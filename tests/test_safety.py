"""Safety: atomic model folders, checkpoints loaded as weights only, no remote code unless asked, no secrets in runs."""

import ast
import json
from pathlib import Path

import pytest
import torch
from cli import ROOT, run_train
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from embedlab.modeling.cross_encoder import CrossEncoder
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.model_files import save_atomically

FAKE_WANDB_KEY = "sk-fake-0123456789abcdef0123456789abcdef"
FAKE_HF_TOKEN = "hf_fakeTokenThatMustNeverBeWritten42"


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_failed_save_leaves_the_old_model_intact(tmp_path, tiny_model_dir, monkeypatch):
    encoder = SentenceEncoder.load(tiny_model_dir)
    target = tmp_path / "model"
    encoder.save(target)
    saved = folder_contents(target)

    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    # The weights are written, then the tokenizer fails: the half-written folder must never replace the model.
    monkeypatch.setattr(encoder.tokenizer, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        encoder.save(target)
    assert folder_contents(target) == saved
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_a_successful_save_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "model"
    save_atomically(target, lambda folder: (folder / "old.txt").write_text("old"))
    save_atomically(target, lambda folder: (folder / "new.txt").write_text("new"))
    assert folder_contents(target) == {"new.txt": b"new"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def python_calls(name: str):
    """(file, call) for every call of an attribute `name` in the project's code."""
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                yield path.relative_to(ROOT), node


def passes_true(call: ast.Call, keyword: str) -> bool:
    return any(k.arg == keyword and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def test_every_checkpoint_load_is_weights_only():
    loads = [(path, call) for path, call in python_calls("load")
             if isinstance(call.func.value, ast.Name) and call.func.value.id == "torch"]
    fits = list(python_calls("fit"))
    assert loads and fits
    unsafe = [f"{path}:{call.lineno}" for path, call in loads + fits if not passes_true(call, "weights_only")]
    assert unsafe == []


@pytest.mark.parametrize("trust", [False, True])
def test_remote_code_is_trusted_only_when_asked(tiny_model_dir, monkeypatch, trust):
    asked = []

    def recording(original):
        def from_pretrained(*args, **kwargs):
            asked.append(kwargs.get("trust_remote_code"))
            return original(*args, **kwargs)
        return from_pretrained

    for auto_class in (AutoModel, AutoModelForSequenceClassification, AutoTokenizer):
        monkeypatch.setattr(auto_class, "from_pretrained", recording(auto_class.from_pretrained))
    if trust:
        SentenceEncoder.from_pretrained(tiny_model_dir, trust_remote_code=True)
        CrossEncoder.from_pretrained(tiny_model_dir, num_labels=1, trust_remote_code=True)
    else:
        SentenceEncoder.from_pretrained(tiny_model_dir)
        CrossEncoder.from_pretrained(tiny_model_dir, num_labels=1)
    assert asked == [trust] * 4


def test_backbone_configs_do_not_trust_remote_code():
    for config in (ROOT / "conf" / "backbone").glob("*.yaml"):
        assert "trust_remote_code: false" in config.read_text(), config.name


@pytest.mark.slow
def test_wandb_run_logs_its_dashboard_and_no_secret(tmp_path, tiny_data_dir, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)
    run_dir = tmp_path / "run"
    # A config may pull a secret in from the environment; what is logged and saved must not show it.
    result = run_train("experiment=stsb_cosine", "logger=wandb", "trainer.max_steps=2", "+notes=${oc.env:HF_TOKEN}",
                       run_dir=run_dir, data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert FAKE_WANDB_KEY not in result.stdout + result.stderr

    files = [path for path in run_dir.rglob("*") if path.is_file()]
    leaking = [str(path) for path in files for secret in (FAKE_WANDB_KEY, FAKE_HF_TOKEN)
               if secret.encode() in path.read_bytes()]
    assert leaking == []
    assert "notes: <redacted>" in (run_dir / "config.yaml").read_text()

    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = run_file.read_bytes()
    run_id = run_file.stem.removeprefix("run-")
    # The offline run file holds protobuf records, whose strings are stored as they are.
    for expected in (b"train/loss", b"dev/stsb/spearman_cosine", b"dev/stsb/cosine/positive", b"test/stsb/cosine/negative", b"histogram",
                     f"model-{run_id}".encode(), b"model.safetensors", b"modules.json"):
        assert expected in records, expected
    (table,) = run_file.parent.glob("files/media/table/evaluation_*.table.json")
    evaluation = json.loads(table.read_text())
    assert evaluation["columns"] == ["step", "stage", "split", "evaluator", "metric", "value"]
    assert {tuple(row[1:5]) for row in evaluation["data"]} >= {("fit", "dev", "stsb", "spearman_cosine"),
                                                               ("test", "test", "stsb", "spearman_cosine")}
