"""Gradient clipping by the global L2 norm, without a host sync."""

from collections.abc import Iterable

import torch
from torch import Tensor

from cs336_basics.optim._checks import check_non_negative


@torch.no_grad()
def clip_gradients(
    parameters: Iterable[torch.nn.Parameter], max_l2_norm: float, eps: float = 1e-6
) -> Tensor:
    """Scale all gradients together so that their global L2 norm is at most `max_l2_norm`.

    The norm is taken over every gradient as one vector; when it exceeds `max_l2_norm`, each
    gradient is multiplied in place by max_l2_norm / (norm + eps). Parameters without a
    gradient are skipped. Returns the norm before clipping (a 0-dim float32 tensor on the
    gradients' device, for logging; no host sync happens here). A non-finite norm is returned
    as is, so the caller can stop on it.
    """
    check_non_negative(max_l2_norm=max_l2_norm)
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    # Norms in the gradients' dtype (no dtype= argument, which sharded FSDP2 gradients do not
    # take), each made float32 before they are combined.
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.float().to(grads[0].device) for n in norms]))
    # Multiply by 1 below the limit rather than branching on the value: no GPU->CPU sync.
    scale = torch.where(total > max_l2_norm, max_l2_norm / (total + eps), 1.0)
    torch._foreach_mul_(grads, scale)
    return total
