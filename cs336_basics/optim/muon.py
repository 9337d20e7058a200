"""Muon for the Transformer's hidden matrices and AdamW for the rest, as one optimizer.

Muon (Keller Jordan, 2024) keeps a momentum of the gradient of each 2-D weight and replaces
the update by its nearest semi-orthogonal matrix (all singular values ~1), computed with a few
Newton-Schulz iterations in bf16. Embeddings, the output head and vectors (norm gains) are
not hidden matrices and keep AdamW, in groups of the same optimizer, so that the trainer,
checkpoints and exact resume see a single `torch.optim.Optimizer`:

    groups = group_parameters(model)
    optimizer = Muon([
        {"params": groups["matrices"], "use_muon": True, "lr": 1e-3, "weight_decay": 0.1},
        {"params": groups["embeddings"] + groups["head"], "use_muon": False, "lr": 1e-3,
         "betas": (0.9, 0.95), "weight_decay": 0.1},
        {"params": groups["scalars"], "use_muon": False, "lr": 1e-3, "weight_decay": 0.0},
    ])

Data parallel (DDP): after the gradient all-reduce every rank holds the same averaged
gradient, so every rank runs the same momentum and Newton-Schulz (the same kernels on the same
inputs) and gets the same update; nothing is communicated, and the orthogonalization work is repeated on each
rank rather than split (its cost: bench/bench_adamw.py). Sharded optimizers (ZeRO, FSDP)
would need each full matrix gathered first; they are not supported.
"""

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.optim._checks import check_non_negative
from cs336_basics.optim.adamw import adamw_update, check_adamw_hyperparameters

# Quintic Newton-Schulz coefficients from Keller Jordan's Muon: a large slope at 0 (a) makes
# small singular values grow fast; the price is that singular values end in a band around 1
# (about 0.7 to 1.2) rather than at 1, which training tolerates.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# Update RMS that the shape-dependent scale gives every matrix: about that of AdamW's update.
MATCHED_RMS = 0.2

# Hyperparameters each kind of group takes, with their defaults. Those of AdamW groups are
# AdamW's; a Muon group's lr and weight decay mean the same as AdamW's (see `update_scale`).
MUON_DEFAULTS = {
    "lr": 1e-3,
    "momentum": 0.95,
    "nesterov": True,
    "ns_steps": 5,
    "weight_decay": 0.01,
}
ADAMW_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}

_WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile's and DDP's wrappers
_EMBEDDING_PREFIXES = ("token_embeddings.", "value_embeddings.")


def newton_schulz(
    G: Float[Tensor, "... rows cols"], steps: int = 5, eps: float = 1e-7
) -> Float[Tensor, "... rows cols"]:
    """Approximately orthogonalize each matrix of `G`: U S V^T -> U S' V^T, S' in ~[0.7, 1.2].

    G is first divided by its Frobenius norm (so every singular value is <= 1), then each of
    `steps` iterations applies X <- a X + (b A + c A^2) X with A = X X^T, i.e. the odd
    polynomial a s + b s^3 + c s^5 to every singular value s. A tall matrix is transposed
    first, so that A is the smaller Gram matrix. The iterations run in bfloat16 (the result
    is bfloat16): the polynomial tolerates its rounding and bf16 matmuls are several times
    faster. Leading dimensions are a batch; an all-zero matrix maps to zero.
    """
    a, b, c = NS_COEFFICIENTS
    at_least_fp32 = torch.promote_types(G.dtype, torch.float32)
    norm = torch.linalg.vector_norm(G, dim=(-2, -1), keepdim=True, dtype=at_least_fp32)
    X = (G / (norm + eps)).bfloat16()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.mT if tall else X


def update_scale(rows: int, cols: int) -> float:
    """Factor applied to the orthogonalized update of a rows x cols matrix before the lr.

    An orthogonalized rows x cols matrix has RMS entry 1/sqrt(max(rows, cols)); times
    0.2 sqrt(max(rows, cols)) its RMS is 0.2, about that of an AdamW update (Moonshot AI, "Muon
    is Scalable for LLM Training", 2025). Chosen over Keller Jordan's sqrt(max(1, rows/cols))
    because this project's learning rates, schedules and weight decay are tuned for AdamW:
    with a matched RMS they carry over to the matrices (one lr for every group is a sound
    start, and decoupled decay lr * weight_decay means the same in both kinds of group), and
    the update size stays the same as the model widens. Keller's scale needs a Muon lr about
    20x AdamW's (0.02 and more).
    """
    return MATCHED_RMS * math.sqrt(max(rows, cols))


class Muon(torch.optim.Optimizer):
    """Muon on the groups marked `use_muon=True`, AdamW (`adamw_update`) on the others.

    Every group dict needs "params" and "use_muon"; missing hyperparameters take the defaults
    of its kind (MUON_DEFAULTS, ADAMW_DEFAULTS) and a key of the other kind is an error. For
    each 2-D parameter W of a Muon group with gradient g (momentum mu, learning rate lr):
        m = mu * m + (1 - mu) * g                      (momentum, an average of gradients)
        u = (1 - mu) * g + mu * m   if nesterov, else m
        W = W - lr * weight_decay * W                  (decoupled decay, pre-update weight)
        W = W - lr * update_scale(rows, cols) * newton_schulz(u, ns_steps)
    Same-shaped matrices are orthogonalized together as one batch. State per Muon parameter in
    `self.state[p]`: "momentum_buffer" (shaped and typed like p); AdamW parameters keep AdamW's
    state. Parameters without a gradient are skipped. The step has no host sync.
    """

    def __init__(self, param_groups: Iterable[dict]):
        super().__init__(param_groups, {})

    def add_param_group(self, param_group: dict) -> None:
        if "use_muon" not in param_group:
            raise ValueError(
                'every Muon param group needs "use_muon": True (2-D hidden matrices) or False '
                "(AdamW); build them from group_parameters(model), see cs336_basics/optim/muon.py"
            )
        use_muon = bool(param_group["use_muon"])
        kind, defaults, other = (
            ("Muon", MUON_DEFAULTS, ADAMW_DEFAULTS)
            if use_muon
            else ("AdamW", ADAMW_DEFAULTS, MUON_DEFAULTS)
        )
        misplaced = sorted((other.keys() - defaults.keys()) & param_group.keys())
        if misplaced:
            raise ValueError(
                f"{misplaced} are not hyperparameters of a {kind} group (use_muon={use_muon}); "
                f"it takes {sorted(defaults)}"
            )
        group = {**defaults, **param_group, "use_muon": use_muon}
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif not isinstance(params, set):  # a set is refused by the base class (no order)
            params = list(params)
        group["params"] = params
        if use_muon:
            check_non_negative(lr=group["lr"], weight_decay=group["weight_decay"])
            if not 0.0 <= group["momentum"] < 1.0:
                raise ValueError(f"momentum must be in [0, 1), got {group['momentum']}")
            if not (isinstance(group["ns_steps"], int) and group["ns_steps"] >= 1):
                raise ValueError(f"ns_steps must be an int >= 1, got {group['ns_steps']!r}")
            for p in params:
                if p.ndim != 2:
                    raise ValueError(
                        f"Muon orthogonalizes 2-D matrices only, got a parameter of shape "
                        f"{tuple(p.shape)} in a use_muon group; put it in an AdamW group"
                    )
        else:
            check_adamw_hyperparameters(
                group["lr"], group["betas"], group["eps"], group["weight_decay"]
            )
        super().add_param_group(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["use_muon"]:
                self._muon_update(group, params)
            else:
                adamw_update(group, params, self.state)
        return loss

    def _muon_update(self, group: dict, params: list[Tensor]) -> None:
        lr, momentum = group["lr"], group["momentum"]
        grads, buffers = [], []
        for p in params:
            if p.grad.is_sparse:
                raise ValueError("Muon does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grads.append(p.grad)
            buffers.append(state["momentum_buffer"])
        torch._foreach_lerp_(buffers, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers
        if group["weight_decay"] != 0:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])

        same_shape = defaultdict(list)
        for p, u in zip(params, updates):
            same_shape[p.shape, p.dtype, p.device].append((p, u))
        for (shape, dtype, _), pairs in same_shape.items():
            ps, us = map(list, zip(*pairs))
            orthogonal = newton_schulz(torch.stack(us), group["ns_steps"]).to(dtype)
            torch._foreach_add_(ps, list(orthogonal.unbind()), alpha=-lr * update_scale(*shape))


def group_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split a TransformerLM's trainable parameters into the groups Muon treats differently.

    "matrices":   every 2-D weight inside the Transformer blocks (`layers.*`): Muon
    "embeddings": `token_embeddings.*` and `value_embeddings.*` tables: AdamW
    "head":       `lm_head.weight` when untied: AdamW. A tied head is the token embedding's
                  Parameter and appears once, under "embeddings".
    "scalars":    norm gains and every other parameter that is not 2-D: AdamW
    Every trainable parameter lands in exactly one group, in model order; names are read
    through torch.compile and DDP wrappers. A 2-D parameter outside the blocks that is neither
    an embedding nor the head is an error, as it is unclear which optimizer suits it.
    """
    names: dict[nn.Parameter, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if p.requires_grad:
            names.setdefault(p, []).append(name)
    groups = {"matrices": [], "embeddings": [], "head": [], "scalars": []}
    for p, aliases in names.items():
        if any(n.startswith(_EMBEDDING_PREFIXES) for n in aliases):
            groups["embeddings"].append(p)
        elif "lm_head.weight" in aliases:
            groups["head"].append(p)
        elif p.ndim != 2:
            groups["scalars"].append(p)
        elif all(n.startswith("layers.") for n in aliases):
            groups["matrices"].append(p)
        else:
            raise ValueError(
                f"{aliases[0]} is a 2-D parameter outside the Transformer blocks that is neither "
                "an embedding nor lm_head; group_parameters (cs336_basics/optim/muon.py) must be "
                "told whether it belongs to Muon or AdamW"
            )
    return groups
