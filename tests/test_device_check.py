"""The CPU half of scripts/device_check.sh, as CI runs it: the gpu tests skip, the benchmark runs tiny, one JSON."""

import json
import os
import subprocess

import torch
from cli import ROOT


def test_the_device_check_runs_on_the_cpu_and_writes_one_json(tmp_path, tiny_model_dir, tiny_data_dir):
    out = tmp_path / "device_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "EMBEDLAB_DATA_DIR": str(tiny_data_dir), "EMBEDLAB_CHECK_MODEL": tiny_model_dir,
           "EMBEDLAB_CHECK_OUT": str(out)}
    result = subprocess.run(["bash", "scripts/device_check.sh", "--cpu-only"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu" and report["tests_exit_status"] == 0 and report["benchmark_exit_status"] == 0
    assert report["tests"] and all(outcome == ("passed" if torch.cuda.is_available() else "skipped")
                                   for outcome in report["tests"].values())
    assert report["benchmark"]["train_stsb_cosine/ratio"] > 0 and report["benchmark"]["encode_bs32/ratio"] > 0
