"""Two "nodes" of one process each on localhost, launched by torchrun as on a real cluster."""

import json
import os
import subprocess
import sys

import pytest
from cli import ROOT
from test_distributed import free_port

NODES = 2


def launch_node(node_rank: int, port: int, run_dir, data_dir, backbone) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={NODES}", "--nproc-per-node=1",
               f"--node-rank={node_rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
               "train.py", "trainer=ddp_cpu", f"trainer.num_nodes={NODES}", "trainer.devices=1",
               "trainer.max_steps=2", "loss=mnr", "data=nli", "data.batch_size=8", "eval_every_n_steps=2",
               f"backbone.name_or_path={backbone}", f"paths.data_dir={data_dir}",
               f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_nodes_through_torchrun_train_with_world_size_two(tmp_path, tiny_data_dir, tiny_model_dir):
    port = free_port()
    run_dirs = [tmp_path / f"node{rank}" for rank in range(NODES)]
    nodes = [launch_node(rank, port, run_dirs[rank], tiny_data_dir, tiny_model_dir) for rank in range(NODES)]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=240)[0])
    finally:
        for node in nodes:
            node.kill()
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-3000:]
    # Lightning found torchrun's environment: each node's process is one member of a world of two.
    assert "MEMBER: 1/2" in outputs[0] and "MEMBER: 2/2" in outputs[1]
    assert "Starting with 2 processes" in outputs[0]
    assert "test/stsb/spearman_cosine" in json.loads((run_dirs[0] / "results.json").read_text())
    # Only the global rank zero writes the results and the model.
    assert not (run_dirs[1] / "results.json").exists()
