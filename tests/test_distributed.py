"""MNR under DDP: two gloo processes with half a batch each must equal one process with the whole batch."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embedlab.losses import MultipleNegativesRankingLoss

BATCH, DIM, WORLD = 4, 8, 2


def embeddings(columns: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(BATCH * WORLD, DIM, generator=generator) for _ in range(columns)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker(rank: int, port: int, columns: int, symmetric: bool, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        local = [e[rank * BATCH:(rank + 1) * BATCH].clone().requires_grad_() for e in embeddings(columns)]
        loss = MultipleNegativesRankingLoss(symmetric=symmetric)(local)
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [e.grad for e in local]}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("columns,symmetric", [(2, False), (3, False), (2, True)])
def test_gathered_negatives_match_one_process_with_the_whole_batch(tmp_path, columns, symmetric):
    out = str(tmp_path / "result")
    mp.spawn(worker, args=(free_port(), columns, symmetric, out), nprocs=WORLD)
    per_rank = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(WORLD)]

    whole = [e.clone().requires_grad_() for e in embeddings(columns)]
    loss = MultipleNegativesRankingLoss(symmetric=symmetric, gather_across_devices=False)(whole)
    loss.backward()

    # Each process's loss covers its own anchors; their mean is the whole batch's loss.
    torch.testing.assert_close(sum(r["loss"] for r in per_rank) / WORLD, loss.detach())
    # DDP averages gradients over processes, so a process's gradient over the world size is the whole-batch one.
    for column in range(columns):
        gathered = torch.cat([r["grads"][column] for r in per_rank]) / WORLD
        torch.testing.assert_close(gathered, whole[column].grad)


def test_local_only_loss_differs_from_the_gathered_one(tmp_path):
    # Guards the test above: without the other process's candidates the losses are not the whole-batch loss.
    full = embeddings(2)
    whole = MultipleNegativesRankingLoss(gather_across_devices=False)(full)
    halves = [MultipleNegativesRankingLoss(gather_across_devices=False)([e[r * BATCH:(r + 1) * BATCH] for e in full])
              for r in range(WORLD)]
    assert not torch.allclose(sum(halves) / WORLD, whole)
