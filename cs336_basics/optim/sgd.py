"""The handout's SGD with a 1/sqrt(t + 1) step decay."""

import math
from collections.abc import Callable, Iterable

import torch

from cs336_basics.optim._checks import check_non_negative


class SGD(torch.optim.Optimizer):
    """The handout's SGD with a decaying step: `p -= lr / sqrt(t + 1) * grad`, t = 0, 1, 2, ...

    `t` counts the updates a parameter has received and lives in `self.state[p]["t"]`.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3):
        check_non_negative(lr=lr)
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = state.get("t", 0)
                p.add_(p.grad, alpha=-group["lr"] / math.sqrt(t + 1))
                state["t"] = t + 1
        return loss
