"""Causal attention as a FlashAttention-2-style Triton kernel: forward and backward.

`flash_attention(q, k, v)` computes what `functional.causal_attention` does without ever
holding the (queries x keys) probabilities: the forward keeps one query block's running max,
sum and output in float32 while it streams key blocks (online softmax), and saves only the
output and each query's logsumexp; the backward recomputes the probabilities block by block,
in one kernel for dq and one for dk/dv (no atomics). Memory is O(T), not O(T^2).

Head sizes 1..128 (tiles are padded to a power of two of at least 16; 16, 32, 64 and 128 waste
nothing). bf16, fp16 and fp32 inputs; fp32 products follow `torch.set_float32_matmul_precision`:
TF32, or float32 accuracy from three TF32 products when it is "highest" (the default); bf16
is the fast path. Any lengths, queries <= keys.

Runs on CUDA GPUs of compute capability 8.0 or more (Ampere, Hopper, ...), and on CPU tensors
under Triton's interpreter (`TRITON_INTERPRET=1` set before Triton is first imported), which is
slow but exact enough to test against. The kernels are wrapped as custom ops
(`torch.ops.cs336.flash_attention_{forward,backward}`), so `torch.compile(fullgraph=True)`
treats each as one opaque call.
"""

import functools
import importlib.util
import math
import os

import torch
from jaxtyping import Float
from torch import Tensor

MAX_HEAD_DIM = 128
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
HAS_TRITON = importlib.util.find_spec("triton") is not None


def flash_attention_available(device: torch.device | str, head_dim: int | None = None) -> bool:
    """Whether `flash_attention` runs on `device` (and, when given, with this head size): on
    CUDA GPUs of compute capability 8.0+, and on CPU when TRITON_INTERPRET=1."""
    device = torch.device(device)
    if not HAS_TRITON or (head_dim is not None and not 1 <= head_dim <= MAX_HEAD_DIM):
        return False
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def flash_attention(
    q: Float[Tensor, "... queries d"],
    k: Float[Tensor, "... keys d"],
    v: Float[Tensor, "... keys d"],
) -> Float[Tensor, "... queries d"]:
    """Causal softmax(q k^T / sqrt(d)) v where the queries are the last keys.

    Query i attends to keys 0 .. (keys - queries) + i: a full sequence when queries == keys,
    new tokens against a KV cache otherwise. q, k and v share their leading dims. Under
    torch.autocast the inputs are cast to its dtype (as `causal_attention` does); the output has
    the inputs' dtype.
    """
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    _check_inputs(q, k, v)
    out, _ = _forward(_as_4d(q), _as_4d(k), _as_4d(v))
    return out.reshape(q.shape)


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() < 2 or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(
            f"q, k and v need the same leading dims before (seq, head_dim); got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q, k and v need one head size and k, v one length; got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-2] > k.shape[-2]:
        raise ValueError(
            f"more queries ({q.shape[-2]}) than keys ({k.shape[-2]}): the queries are the last "
            "keys, so pass every key they attend to"
        )
    if not 1 <= q.shape[-1] <= MAX_HEAD_DIM:
        raise ValueError(
            f"head size {q.shape[-1]} is not supported by the Triton kernel (1..{MAX_HEAD_DIM}); "
            "use attention='scratch' or 'sdpa'"
        )
    if not q.dtype == k.dtype == v.dtype or q.dtype not in DTYPES:
        raise TypeError(
            f"q, k and v need one dtype among {DTYPES}; got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    if not q.device == k.device == v.device:
        raise ValueError(f"q, k and v are on different devices: {q.device}, {k.device}, {v.device}")
    if not torch.compiler.is_compiling() and not flash_attention_available(q.device):
        raise RuntimeError(
            f"the Triton attention kernel cannot run on {q.device}: it needs a CUDA GPU of compute "
            "capability 8.0+ with triton installed, or, on CPU, TRITON_INTERPRET=1 set before "
            "triton is imported (slow; for tests). Use attention='scratch' or 'sdpa' instead"
        )


def _as_4d(x: Tensor) -> Tensor:
    """(batch, heads, seq, d) view of x (leading dims merged or added), unit stride along d."""
    x = x.reshape(math.prod(x.shape[:-3]), math.prod(x.shape[-3:-2]), *x.shape[-2:])
    return x if x.stride(-1) == 1 else x.contiguous()


@functools.cache
def _kernels():
    """The Triton kernels' module, imported at first use: Triton is not on every platform, and
    TRITON_INTERPRET must be set before it is imported."""
    from cs336_basics.nn import flash_attention_kernels

    return flash_attention_kernels


@torch.library.custom_op("cs336::flash_attention_forward", mutates_args=())
def _forward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(out, float32 base-2 logsumexp per query) of 4-D q, k, v."""
    return _kernels().forward(q, k, v)


@_forward.register_fake
def _(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(q), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("cs336::flash_attention_backward", mutates_args=())
def _backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv), recomputing the probabilities from q, k and the saved logsumexp."""
    return _kernels().backward(grad_out, q, k, v, out, lse)


@_backward.register_fake
def _(grad_out, q, k, v, out, lse) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs: tuple[Tensor, ...], output: tuple[Tensor, Tensor]) -> None:
    out, lse = output
    ctx.save_for_backward(*inputs, out, lse)
    ctx.mark_non_differentiable(lse)


def _differentiate(ctx, grad_out: Tensor, _grad_lse: None) -> tuple[Tensor, Tensor, Tensor]:
    grad_out = grad_out if grad_out.stride(-1) == 1 else grad_out.contiguous()
    return _backward(grad_out, *ctx.saved_tensors)


_forward.register_autograd(_differentiate, setup_context=_setup_context)
