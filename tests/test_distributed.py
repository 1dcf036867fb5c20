"""MNR under DDP: two gloo processes with half a batch each must equal one process with the whole batch."""

import socket
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embedlab.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
    mnr,
)
from embedlab.modeling.encoder import SentenceEncoder

BATCH, DIM, WORLD = 4, 8, 2


def embeddings(columns: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(BATCH * WORLD, DIM, generator=generator) for _ in range(columns)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def recording(scores: list[torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    matrix = cosine_matrix(a, b)
    scores.append(matrix.detach())
    return matrix


cosine_matrix = mnr.cosine_matrix
ONE_WAY = ("query_to_doc",)


def worker(rank: int, port: int, columns: int, directions: tuple[str, ...], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        # The loss's similarity matrices, as it computed them, for the test to look inside.
        scores = []
        mnr.cosine_matrix = partial(recording, scores)
        local = [e[rank * BATCH:(rank + 1) * BATCH].clone().requires_grad_() for e in embeddings(columns)]
        loss = MultipleNegativesRankingLoss(directions=directions)(local)
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [e.grad for e in local], "scores": scores[0]}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("columns,directions", [(2, ONE_WAY), (3, ONE_WAY), (2, mnr.DIRECTIONS), (3, mnr.DIRECTIONS)])
def test_gathered_negatives_match_one_process_with_the_whole_batch(tmp_path, columns, directions):
    out = str(tmp_path / "result")
    mp.spawn(worker, args=(free_port(), columns, directions, out), nprocs=WORLD)
    per_rank = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(WORLD)]

    whole = [e.clone().requires_grad_() for e in embeddings(columns)]
    loss = MultipleNegativesRankingLoss(directions=directions, gather_across_devices=False)(whole)
    loss.backward()

    # Each process scores its own anchors against the candidates of both processes, in rank order.
    anchors, *candidates = embeddings(columns)
    for rank, result in enumerate(per_rank):
        expected = cosine_matrix(anchors[rank * BATCH:(rank + 1) * BATCH], torch.cat(candidates))
        assert result["scores"].shape == (BATCH, WORLD * BATCH * (columns - 1))
        torch.testing.assert_close(result["scores"], expected)
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


TEXTS = {"anchor": ["a man plays the guitar", "a woman plays the piano", "the dog runs in the park",
                    "a cat sleeps in the house"],
         "positive": ["two children play with a ball", "the young boy rides a red bike",
                      "an old man reads in the park", "a bird sits in the tree"]}
MINI_BATCH = 1


def tiny_encoder(model_dir: str) -> SentenceEncoder:
    encoder = SentenceEncoder.from_pretrained(model_dir).eval()
    torch.set_num_threads(1)
    return encoder


def encoder_gradients(encoder: SentenceEncoder) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in encoder.named_parameters() if p.grad is not None}


def cached_worker(rank: int, port: int, model_dir: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        encoder = tiny_encoder(model_dir)
        half = len(TEXTS["anchor"]) // WORLD
        local = [encoder.forward_in_mini_batches(encoder.tokenize(texts[rank * half:(rank + 1) * half]), MINI_BATCH)
                 for texts in TEXTS.values()]
        loss = CachedMultipleNegativesRankingLoss(MINI_BATCH)(local)
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": encoder_gradients(encoder)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_cached_mnr_on_two_processes_matches_mnr_on_the_whole_batch(tmp_path, tiny_model_dir):
    out = str(tmp_path / "result")
    mp.spawn(cached_worker, args=(free_port(), tiny_model_dir, out), nprocs=WORLD)
    per_rank = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(WORLD)]

    encoder = tiny_encoder(tiny_model_dir)
    loss = MultipleNegativesRankingLoss(gather_across_devices=False)(
        [encoder(encoder.tokenize(texts)) for texts in TEXTS.values()])
    loss.backward()

    torch.testing.assert_close(sum(r["loss"] for r in per_rank) / WORLD, loss.detach(), rtol=0, atol=1e-5)
    whole = encoder_gradients(encoder)
    assert per_rank[0]["grads"].keys() == whole.keys() and len(whole) > 0
    for name, grad in whole.items():
        torch.testing.assert_close(sum(r["grads"][name] for r in per_rank) / WORLD, grad, rtol=0, atol=1e-5, msg=name)
