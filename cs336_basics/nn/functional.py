"""Stateless neural-net ops on core tensor primitives: activations, softmax, attention, loss."""

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def silu(x: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """SiLU (swish): x * sigmoid(x), elementwise."""
    return x * torch.sigmoid(x)


def softmax(x: Float[Tensor, "..."], dim: int) -> Float[Tensor, "..."]:
    """Softmax along `dim`; the row maximum is subtracted first so exp never overflows."""
    # The max only shifts the exponent; softmax is invariant to it, so its gradient is zero and
    # detaching it spares autograd a useless backward through amax.
    exp = (x - x.detach().amax(dim, keepdim=True)).exp()
    return exp / exp.sum(dim, keepdim=True)


def scaled_dot_product_attention(
    Q: Float[Tensor, "... queries d_k"],
    K: Float[Tensor, "... keys d_k"],
    V: Float[Tensor, "... keys d_v"],
    mask: Bool[Tensor, "... queries keys"] | None = None,
) -> Float[Tensor, "... queries d_v"]:
    """softmax(Q K^T / sqrt(d_k)) V over any leading batch dims.

    `mask` (broadcastable to `(..., queries, keys)`) is True where a query may attend to a key.
    A query that may attend to no key gets NaN (torch's own attention returns zeros there).
    """
    # Scaling Q (queries x d_k) is cheaper than scaling the scores (queries x keys).
    scores = (Q * Q.shape[-1] ** -0.5) @ K.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=-1) @ V


def causal_attention(
    Q: Float[Tensor, "... queries d_k"],
    K: Float[Tensor, "... keys d_k"],
    V: Float[Tensor, "... keys d_v"],
    block_size: int = 64,
) -> Float[Tensor, "... queries d_v"]:
    """Causal scaled_dot_product_attention where the queries are the last keys.

    Query i attends to keys 0 .. (keys - queries) + i, so this covers both a full sequence and
    new tokens decoding against a KV cache. Q, K and V share their leading dims. Same result
    as the masked general version, but queries go in blocks that skip the keys their causal
    mask would hide (about half of the work and memory at full length), with a hand-written
    backward that keeps only the probabilities.

    Under torch.autocast the inputs are cast to its dtype. Half-precision inputs (bf16, fp16)
    are computed in float32 (scores, softmax statistics, products and gradient sums, as
    FlashAttention keeps them) and the output is rounded once, to the inputs' dtype; the saved
    probabilities stay at the inputs' precision, so their memory does not double.
    """
    if torch.is_autocast_enabled(Q.device.type):
        dtype = torch.get_autocast_dtype(Q.device.type)
        Q, K, V = Q.to(dtype), K.to(dtype), V.to(dtype)
    # Off inside: autocast would round the float32 products below back to its dtype.
    with torch.autocast(Q.device.type, enabled=False):
        return _CausalAttention.apply(Q, K, V, block_size)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, block_size: int) -> Tensor:
        num_q, offset = q.shape[-2], k.shape[-2] - q.shape[-2]
        dtype, compute = q.dtype, torch.promote_types(q.dtype, torch.float32)
        # In the compute dtype and contiguous once here, not copied by every block's matmul.
        q = (q.to(compute) * q.shape[-1] ** -0.5).contiguous()
        k, v = k.to(compute).contiguous(), v.to(compute).contiguous()
        # Within a block, only the square of keys aligned with its own queries is partly hidden.
        hidden = torch.ones(block_size, block_size, dtype=torch.bool, device=q.device).triu_(1)
        outputs, probs = [], []
        for start in range(0, num_q, block_size):
            stop = min(start + block_size, num_q)
            seen = offset + stop  # keys visible to this block's last query
            p = q[..., start:stop, :] @ k[..., :seen, :].transpose(-2, -1)
            p[..., seen - (stop - start) :].masked_fill_(
                hidden[: stop - start, : stop - start], float("-inf")
            )
            p.sub_(p.amax(-1, keepdim=True)).exp_()  # softmax in place: these scores are ours alone
            p.div_(p.sum(-1, keepdim=True))
            outputs.append(p @ v[..., :seen, :])
            probs.append(p.to(dtype))
        out = torch.cat(outputs, dim=-2).to(dtype)
        ctx.save_for_backward(q, k, v, out, *probs)
        ctx.block_size = block_size
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        with torch.autocast(grad_out.device.type, enabled=False):  # called within autocast too
            return _CausalAttention._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        # q, k, v in the compute dtype, q scaled by 1/sqrt(d_k); out and probs in the inputs'.
        q, k, v, out, *probs = ctx.saved_tensors
        num_q, offset = q.shape[-2], k.shape[-2] - q.shape[-2]
        grad_out = grad_out.to(q.dtype)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        # Softmax backward needs sum_j p_j dp_j per query, which equals sum(grad_out * out) there.
        row_dot = (grad_out * out.to(q.dtype)).sum(-1, keepdim=True)
        for block, p in enumerate(probs):
            p = p.to(q.dtype)
            start = block * ctx.block_size
            stop = min(start + ctx.block_size, num_q)
            seen = offset + stop
            grad_block = grad_out[..., start:stop, :]
            grad_v[..., :seen, :] += p.transpose(-2, -1) @ grad_block
            grad_scores = grad_block @ v[..., :seen, :].transpose(-2, -1)
            grad_scores.sub_(row_dot[..., start:stop, :]).mul_(p)
            grad_q[..., start:stop, :] = grad_scores @ k[..., :seen, :]
            grad_k[..., :seen, :] += grad_scores.transpose(-2, -1) @ q[..., start:stop, :]
        grad_q *= q.shape[-1] ** -0.5
        return grad_q, grad_k, grad_v, None  # autograd casts each to its input's dtype


def cross_entropy(
    logits: Float[Tensor, "... vocab"], targets: Int[Tensor, "..."]
) -> Float[Tensor, ""]:
    """Mean of -log softmax(logits)[target] over all batch positions, computed in float32.

    Stable for huge logits: log-sum-exp is taken after subtracting each row's maximum.
    """
    return _CrossEntropy.apply(logits, targets)


class _CrossEntropy(torch.autograd.Function):
    """Cross-entropy with the backward softmax - one_hot written out: it keeps one (N, vocab)
    tensor, exp(logits - max), where autograd through exp/sum/log would keep several."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        logits32 = logits.float()
        shift = logits32.amax(-1, keepdim=True)
        exp = (logits32 - shift).exp_()
        sum_exp = exp.sum(-1, keepdim=True)
        target_logits = logits32.gather(-1, targets.unsqueeze(-1))
        ctx.save_for_backward(exp, sum_exp, targets)
        ctx.logits_dtype = logits.dtype
        return (sum_exp.log() + shift - target_logits).mean()

    @staticmethod
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, None]:
        exp, sum_exp, targets = ctx.saved_tensors
        weight = grad_loss / targets.numel()  # d mean / d each position
        grad = exp * (weight / sum_exp)  # softmax, scaled, in one pass
        index = targets.unsqueeze(-1)
        grad.scatter_add_(-1, index, (-weight).expand(index.shape))
        return grad.to(ctx.logits_dtype), None


def perplexity(mean_loss: float | Tensor) -> float:
    """exp(mean cross-entropy in nats); inf when that overflows a float."""
    try:
        return math.exp(float(mean_loss))
    except OverflowError:
        return math.inf
