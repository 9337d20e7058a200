"""Validation loss on a fixed sample of a token array."""

import numpy.typing as npt
import torch

from cs336_basics.data import validation_batches
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.training.device import autocast_context


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
) -> float:
    """Mean next-token cross-entropy (nats per token) over `validation_batches(...)`.

    The same (dataset, batch_size, context_length, num_batches, seed) always scores the same
    windows, so values from different steps and runs compare directly. Every token counts
    once (a smaller last batch is weighted by its size). The model's train/eval mode is
    restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=device), 0
    try:
        for x, y in validation_batches(
            dataset, batch_size, context_length, num_batches, seed, device
        ):
            with autocast_context(device, autocast):
                logits = model(x)
            total += cross_entropy(logits, y) * y.numel()
            count += y.numel()
    finally:
        model.train(was_training)
    return (total / count).item()
