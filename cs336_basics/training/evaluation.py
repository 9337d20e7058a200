"""Validation loss on a fixed sample of a token array."""

import numpy.typing as npt
import torch

from cs336_basics.data import validation_batches
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.training.device import autocast_context
from cs336_basics.training.distributed import Distributed


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    dataset: npt.ArrayLike,
    batch_size: int,
    context_length: int,
    num_batches: int | None,
    device: str | torch.device,
    seed: int = 0,
    autocast: str = "auto",
    dist: Distributed | None = None,
) -> float:
    """Mean next-token cross-entropy (nats per token) over `validation_batches(...)`.

    The same (dataset, batch_size, context_length, num_batches, seed) always scores the same
    windows, so values from different steps and runs compare directly. Every token counts
    once (a smaller last batch is weighted by its size). Under data parallelism (`dist`) each
    rank scores its share of every batch's rows and the result is their token-weighted mean:
    the same sample and value at any world size. The model's train/eval mode is restored.
    """
    device = torch.device(device)
    dist = dist or Distributed()
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, device=device)  # loss * tokens, tokens
    try:
        for x, y in validation_batches(
            dataset, batch_size, context_length, num_batches, seed, device
        ):
            # Every rank runs every batch, on its share of the rows (maybe none): a sharded
            # model's forward is a collective that all ranks must join.
            n = len(x)
            rows = slice(dist.rank * n // dist.world_size, (dist.rank + 1) * n // dist.world_size)
            x, y = x[rows], y[rows]
            with autocast_context(device, autocast):
                logits = model(x)
            if y.numel():
                sums[0] += cross_entropy(logits, y) * y.numel()
                sums[1] += y.numel()
    finally:
        model.train(was_training)
    total, count = dist.sum(sums).tolist()
    return total / count
