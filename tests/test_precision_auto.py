"""precision=auto: bf16 where the hardware computes it natively, fp32 elsewhere, said in one log line; an explicit
precision passes through unchanged."""

import logging

import pytest
from cli import run_train

from embedlab.modeling import precision


@pytest.mark.parametrize(("flags", "training", "inference"), [
    ({"avx512f", "avx512_bf16"}, "bf16-mixed", "bf16-true"),
    ({"avx512f", "amx_bf16", "amx_tile"}, "bf16-mixed", "bf16-true"),
    ({"avx512f", "avx2"}, "32-true", "32-true"),
    (set(), "32-true", "32-true"),
])
def test_auto_follows_the_cpu_flags(monkeypatch, caplog, flags, training, inference):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    with caplog.at_level(logging.INFO, logger=precision.__name__):
        assert precision.resolve_precision("auto", "cpu") == training
        assert precision.resolve_precision("auto", "cpu", "inference") == inference
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith(f"precision=auto: {training}, as ")
    assert lines[1].startswith(f"precision=auto: {inference}, as ")


def test_an_explicit_precision_passes_through(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    with caplog.at_level(logging.INFO, logger=precision.__name__):
        assert precision.resolve_precision("32-true", "cpu") == "32-true"
        assert precision.resolve_precision("16-mixed", "cpu") == "16-mixed"
    assert not caplog.records


def test_this_machines_flags_are_read(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    monkeypatch.setattr(precision, "CPU_INFO", cpuinfo)
    assert precision.cpu_flags() == {"fpu", "avx512f", "avx512_bf16"}
    monkeypatch.setattr(precision, "CPU_INFO", tmp_path / "absent")
    assert precision.cpu_flags() == set()


def test_a_training_run_says_what_auto_chose(tmp_path, tiny_data_dir, tiny_model_dir):
    result = run_train("experiment=stsb_cosine", "trainer.max_steps=2", "logger=none", run_dir=tmp_path,
                       data_dir=tiny_data_dir, backbone=tiny_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = "bf16-mixed" if precision.native_bf16(precision.torch.device("cpu"))[0] else "32-true"
    lines = [line for line in (tmp_path / "train.log").read_text().splitlines() if "precision=auto:" in line]
    assert len(lines) == 1 and f"precision=auto: {expected}, as this CPU has" in lines[0]
