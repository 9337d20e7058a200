"""Parameterized layers: Linear, Embedding, RMSNorm, feed-forward nets, rotary position embedding."""

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.nn.functional import silu


def _truncated_normal(shape: tuple[int, ...], std: float, device, dtype) -> nn.Parameter:
    """A parameter drawn from N(0, std^2) truncated at +-3 std."""
    weight = torch.empty(shape, device=device, dtype=dtype)
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
    return nn.Parameter(weight)


class Linear(nn.Module):
    """y = x W^T without bias; W has shape (out_features, in_features).

    W ~ N(0, 2 / (in + out)) truncated at 3 sigma, which keeps activation variance about constant.
    """

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        std = math.sqrt(2 / (in_features + out_features))
        self.weight = _truncated_normal((out_features, in_features), std, device, dtype)

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return x @ self.weight.T

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Embedding(nn.Module):
    """Lookup table of shape (num_embeddings, embedding_dim), rows ~ N(0, 1) truncated at +-3."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = _truncated_normal((num_embeddings, embedding_dim), 1.0, device, dtype)

    def forward(self, token_ids: Int[Tensor, "..."]) -> Float[Tensor, "... d"]:
        return self.weight[token_ids]

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}"


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g over the last dim, computed in float32, returned in x's dtype."""

    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight).to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.weight.shape[0]}, eps={self.eps}"


def swiglu_hidden_size(d_model: int) -> int:
    """About 8/3 d_model, rounded up to a multiple of 64 for matmul-friendly shapes."""
    return 64 * math.ceil(8 * d_model / 3 / 64)


class SwiGLU(nn.Module):
    """W2 (SiLU(W1 x) * W3 x): the gated feed-forward net of Llama."""

    def __init__(self, d_model: int, d_ff: int | None = None, device=None, dtype=None):
        super().__init__()
        d_ff = swiglu_hidden_size(d_model) if d_ff is None else d_ff
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.w2(silu(self.w1(x)) * self.w3(x))


def relu_squared(x: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """max(x, 0)^2, elementwise (Primer, So et al. 2021)."""
    return torch.relu(x).square()


class UngatedFFN(nn.Module):
    """W2 act(W1 x) with act SiLU (the handout's ablation) or ReLU^2 ("relu2", as in Primer and
    modded-nanogpt); d_ff defaults to 4 d_model, about SwiGLU's parameter count."""

    ACTIVATIONS = {"silu": silu, "relu2": relu_squared}

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        activation: str = "silu",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {tuple(self.ACTIVATIONS)}"
            )
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.activation = activation
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.w2(self.ACTIVATIONS[self.activation](self.w1(x)))

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


def make_ffn(
    kind: str, d_model: int, d_ff: int | None = None, device=None, dtype=None
) -> SwiGLU | UngatedFFN:
    """The feed-forward net a config's `ffn` names: "swiglu", "silu" or "relu2"."""
    if kind == "swiglu":
        return SwiGLU(d_model, d_ff, device=device, dtype=dtype)
    return UngatedFFN(d_model, d_ff, kind, device=device, dtype=dtype)


class ValueEmbedding(Embedding):
    """One layer's value embedding: scale * table[token], added to that layer's attention values.

    The scale is a learnable scalar that starts at 0, so a model starts exactly as it would
    without value embeddings; the table learns once the scale has moved off 0.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        self.scale = nn.Parameter(torch.zeros((), device=device, dtype=dtype))

    def forward(self, token_ids: Int[Tensor, "..."]) -> Float[Tensor, "... d"]:
        return self.scale * super().forward(token_ids)


class RotaryPositionalEmbedding(nn.Module):
    """Rotates each interleaved pair (x[2k], x[2k+1]) by angle pos / theta^(2k / d_k).

    Tables for positions 0 .. max_seq_len-1 are built once; they are derived state, so they
    are kept out of the state dict. Each is d_k wide, so a rotation is two products:
    (x0, x1) -> (x0, x1) * (cos, cos) + (x1, x0) * (-sin, sin).
    """

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None):
        super().__init__()
        if d_k % 2:
            raise ValueError(f"RoPE rotates pairs of features, so d_k must be even; got d_k={d_k}")
        self.d_k, self.max_seq_len = d_k, max_seq_len
        inv_freq = theta ** -(torch.arange(0, d_k, 2, device=device, dtype=torch.float64) / d_k)
        angles = torch.arange(max_seq_len, device=device, dtype=torch.float64)[:, None] * inv_freq
        cos, sin = angles.cos(), angles.sin()
        self.register_buffer(
            "cos", torch.stack((cos, cos), -1).flatten(-2).float(), persistent=False
        )
        self.register_buffer(
            "sin", torch.stack((-sin, sin), -1).flatten(-2).float(), persistent=False
        )

    def forward(
        self, x: Float[Tensor, "... seq d_k"], token_positions: Int[Tensor, "... seq"]
    ) -> Float[Tensor, "... seq d_k"]:
        """`token_positions` broadcasts against x's leading dims (e.g. (seq,) or (batch, 1, seq))."""
        cos = self.cos[token_positions].to(x.dtype)
        sin = self.sin[token_positions].to(x.dtype)
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        return torch.addcmul(x * cos, swapped, sin)

    def extra_repr(self) -> str:
        return f"d_k={self.d_k}, max_seq_len={self.max_seq_len}"
