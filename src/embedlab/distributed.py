"""Across DDP processes: embeddings gathered with gradients (so negatives grow with the world size), and the
evaluation outputs of each process's share put back together."""

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # Every process's loss depends on this process's rows, so their gradients are summed before slicing ours.
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate `tensor` from every process in rank order; gradients flow back to each owner."""
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_in_order(indices: Tensor, values: Tensor, total: int) -> Tensor:
    """Rows that the processes computed for their shares of `total` inputs, put together in input order.

    `indices[i]` is the input position of `values[i]`; every position is computed by exactly one process. Every
    process gets the whole result.
    """
    values = values.float()
    shape = (total, *values.shape[1:])
    if world_size() == 1:
        result = torch.empty(shape, dtype=values.dtype, device=values.device)
        result[indices.to(values.device)] = values
        return result
    # all_gather needs equal shapes, so each share is padded to the largest possible one (index -1 marks padding).
    rows = -(-total // world_size())
    padded_indices = torch.full((rows,), -1, dtype=torch.long, device=values.device)
    padded_indices[:len(indices)] = indices.to(values.device)
    padded_values = torch.zeros((rows, *values.shape[1:]), dtype=values.dtype, device=values.device)
    padded_values[:len(values)] = values
    all_indices = [torch.empty_like(padded_indices) for _ in range(world_size())]
    all_values = [torch.empty_like(padded_values) for _ in range(world_size())]
    dist.all_gather(all_indices, padded_indices)
    dist.all_gather(all_values, padded_values)
    gathered_indices, gathered_values = torch.cat(all_indices), torch.cat(all_values)
    real = gathered_indices >= 0
    result = torch.empty(shape, dtype=values.dtype, device=values.device)
    result[gathered_indices[real]] = gathered_values[real]
    return result
