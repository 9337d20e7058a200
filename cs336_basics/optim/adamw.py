"""AdamW with decoupled weight decay, as `torch._foreach_*` calls over lists of tensors.

Each arithmetic step of the update is one foreach call instead of a Python loop over
parameters. On GPUs the list is the whole group (fused multi-tensor kernels); on CPUs, where
foreach ops run tensor after tensor anyway, it is a cache-sized slice of the group, so all the
steps of the update reuse data while it is in cache. See bench/bench_adamw.py for the figures
against a per-parameter loop and torch.optim.AdamW.
"""

import math
from collections.abc import Callable, Iterable, Iterator, MutableMapping

import torch
from torch import Tensor

from cs336_basics.optim._checks import check_non_negative

# Elements per CPU batch: 2 MiB of float32 per tensor, five tensors live (10 MiB), within the
# last-level cache of common CPUs. Smaller batches pay more per-call and per-thread-fork overhead,
# larger ones spill to DRAM between the steps of the update.
_CPU_BATCH = 1 << 19

# One parameter's update: (param, grad, exp_avg, exp_avg_sq, step_size, eps).
_Row = tuple[Tensor, Tensor, Tensor, Tensor, float, float]


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay, as in the handout (Loshchilov & Hutter, 2019).

    For each parameter with a gradient g, at its step t = 1, 2, ...:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        alpha_t = lr * sqrt(1 - b2**t) / (1 - b1**t)
        p = p - lr * weight_decay * p
        p = p - alpha_t * m / (sqrt(v) + eps * sqrt(1 - b2**t))

    This is the handout's bias-corrected step with eps added to the bias-corrected sqrt(v)
    (as in the Adam paper's Algorithm 1 and torch.optim.AdamW, which this matches to float
    rounding); the handout adds eps to the raw sqrt(v), a difference that matters only for
    gradients near eps in size. Decoupled decay uses the pre-update parameter, as torch does.
    State per parameter in `self.state[p]`: "step" (int), "exp_avg" (m), "exp_avg_sq" (v),
    each moment shaped and typed like the parameter. Parameters whose `.grad` is None are left
    alone and their step does not advance.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        check_adamw_hyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(
            params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                adamw_update(group, params, self.state)
        return loss


def check_adamw_hyperparameters(
    lr: float, betas: tuple[float, float], eps: float, weight_decay: float
) -> None:
    """Raise ValueError unless lr, eps, weight_decay >= 0 and both betas are in [0, 1)."""
    check_non_negative(lr=lr, eps=eps, weight_decay=weight_decay)
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")


@torch.no_grad()
def adamw_update(group: dict, params: list[Tensor], state: MutableMapping[Tensor, dict]) -> None:
    """One AdamW step (see `AdamW`) of `params`, all with gradients, under `group`'s "lr",
    "betas", "eps" and "weight_decay"; `state` is the optimizer's per-parameter state, whose
    entries are created here on a parameter's first step. Shared by AdamW and Muon."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    rows: list[_Row] = []
    for p in params:
        if p.grad.is_sparse:
            raise ValueError("AdamW does not support sparse gradients")
        p_state = state[p]
        if not p_state:
            p_state["step"] = 0
            p_state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            p_state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        p_state["step"] += 1
        t = p_state["step"]
        # Steps can differ between parameters (one may have missed a backward pass), so the
        # bias corrections are per-parameter scalars, computed here on the host.
        root_correction2 = math.sqrt(1 - beta2**t)
        step_size, eps_t = -lr * root_correction2 / (1 - beta1**t), eps * root_correction2
        rows.append((p, p.grad, p_state["exp_avg"], p_state["exp_avg_sq"], step_size, eps_t))

    # Slices are views only of plain tensors (not of FSDP's sharded DTensor parameters).
    on_cpu = all(p.device.type == "cpu" and type(p.data) is Tensor for p in params)
    batches = _cache_sized_batches(rows) if on_cpu else [rows]
    for batch in batches:
        ps, gs, ms, vs, step_sizes, epsilons = map(list, zip(*batch))
        torch._foreach_lerp_(ms, gs, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - beta2)
        if group["weight_decay"] != 0:
            torch._foreach_mul_(ps, 1 - lr * group["weight_decay"])
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, epsilons)
        torch._foreach_addcdiv_(ps, ms, denom, step_sizes)


def _cache_sized_batches(rows: list[_Row]) -> Iterator[list[_Row]]:
    """Regroup rows into batches of about _CPU_BATCH elements: small tensors are gathered,
    large ones cut into flat slices (views, so updates land in place; a tensor that is not
    contiguous stays whole)."""
    batch, size = [], 0
    for *tensors, step_size, eps in rows:
        if all(t.is_contiguous() for t in tensors):
            pieces = zip(*(t.view(-1).split(_CPU_BATCH) for t in tensors))
        else:
            pieces = [tensors]
        for piece in pieces:
            batch.append((*piece, step_size, eps))
            size += piece[0].numel()
            if size >= _CPU_BATCH:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch
