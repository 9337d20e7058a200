"""Causal multi-head self-attention, the Transformer block, the Transformer LM and its KV cache."""

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.nn.functional import causal_attention
from cs336_basics.nn.layers import (
    Embedding,
    Linear,
    RMSNorm,
    RotaryPositionalEmbedding,
    SiLUFFN,
    SwiGLU,
    swiglu_hidden_size,
)

VARIANTS = {
    "norm": ("pre", "post", "none"),
    "positions": ("rope", "nope"),
    "ffn": ("swiglu", "silu"),
}


def _check_variants(**chosen: str) -> None:
    for option, value in chosen.items():
        if value not in VARIANTS[option]:
            raise ValueError(f"unknown {option}={value!r}; choose one of {VARIANTS[option]}")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a TransformerLM (saved next to its weights).

    Variants for ablations: `norm` places RMSNorm before ("pre") or after ("post") each
    residual sublayer, or drops every norm ("none"); `positions` is RoPE or no positional
    signal ("nope"); `ffn` is gated SwiGLU or a plain SiLU net. `d_ff=None` picks the
    FFN's usual width (about 8/3 d_model for SwiGLU, 4 d_model for SiLU). With
    `tie_embeddings`, lm_head and token_embeddings share one weight.
    """

    vocab_size: int
    context_length: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int | None = None
    rope_theta: float = 10000.0
    norm: Literal["pre", "post", "none"] = "pre"
    positions: Literal["rope", "nope"] = "rope"
    ffn: Literal["swiglu", "silu"] = "swiglu"
    tie_embeddings: bool = False
    eps: float = 1e-5

    def __post_init__(self):
        _check_variants(norm=self.norm, positions=self.positions, ffn=self.ffn)
        if self.d_ff is None:
            self.d_ff = (
                swiglu_hidden_size(self.d_model) if self.ffn == "swiglu" else 4 * self.d_model
            )
        for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                "pick num_heads that divides d_model"
            )
        if self.positions == "rope" and (self.d_model // self.num_heads) % 2:
            raise ValueError(
                f"RoPE needs an even head size, but d_k = d_model/num_heads = {self.d_model // self.num_heads}; "
                "change num_heads or use positions='nope'"
            )
        if self.positions == "rope" and self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be positive; got {self.rope_theta}")
        if self.eps <= 0:
            raise ValueError(f"eps must be positive; got {self.eps}")


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, per layer, for incremental decoding.

    Each buffer has shape (batch, heads, context_length, d_k); the first `length` positions
    are filled. The model writes into it and advances `length` on every forward call.
    """

    keys: list[Tensor]
    values: list[Tensor]
    length: int = 0

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[-2]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (batch, heads, new, d_k) after the cached ones; return all keys/values so far."""
        end = self.length + k.shape[-2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention, with RoPE on queries and keys when `rope` is given.

    q/k/v/output weights are (d_model, d_model), rows (or columns) grouped head by head. (One
    fused q/k/v matmul measured no faster on CPU than three, so they stay separate.)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope: RotaryPositionalEmbedding | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads, self.d_k = num_heads, d_model // num_heads
        if rope is not None and rope.d_k != self.d_k:
            raise ValueError(
                f"rope was built for d_k={rope.d_k}, but this attention has d_k={self.d_k}"
            )
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.rope = rope

    def forward(
        self,
        x: Float[Tensor, "... seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
    ) -> Float[Tensor, "... seq d_model"]:
        """With `kv_cache`, x holds only new tokens; they attend to every cached one too."""
        seq = x.shape[-2]
        start = 0 if kv_cache is None else kv_cache.length
        q, k, v = (
            rearrange(proj(x), "... s (h d) -> ... h s d", h=self.num_heads)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(start, start + seq, device=x.device)
            positions = token_positions.unsqueeze(-2)  # broadcast over heads
            q, k = self.rope(q, positions), self.rope(k, positions)
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)
        out = causal_attention(q, k, v)  # the new queries are the last of the keys
        return self.output_proj(rearrange(out, "... h s d -> ... s (h d)"))


class TransformerBlock(nn.Module):
    """Attention then feed-forward, each a residual sublayer; RMSNorm placement per `norm`.

    pre:  z = x + MHA(ln1(x)),  y = z + FFN(ln2(z))
    post: z = ln1(x + MHA(x)),  y = ln2(z + FFN(z))
    none: z = x + MHA(x),       y = z + FFN(z)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int | None,
        max_seq_len: int,
        theta: float,
        device=None,
        dtype=None,
        *,
        norm: str = "pre",
        positions: str = "rope",
        ffn: str = "swiglu",
        eps: float = 1e-5,
        rope: RotaryPositionalEmbedding | None = None,
    ):
        """`rope`: a RoPE module to share (the LM passes one to all its blocks); built here
        from max_seq_len/theta when positions="rope" and none is given."""
        super().__init__()
        _check_variants(norm=norm, positions=positions, ffn=ffn)
        self.norm = norm
        if positions == "nope":
            rope = None
        elif rope is None:
            rope = RotaryPositionalEmbedding(
                theta, d_model // num_heads, max_seq_len, device=device
            )
        self.attn = MultiHeadSelfAttention(
            d_model, num_heads, rope=rope, device=device, dtype=dtype
        )
        ffn_class = SwiGLU if ffn == "swiglu" else SiLUFFN
        self.ffn = ffn_class(d_model, d_ff, device=device, dtype=dtype)
        if norm != "none":
            self.ln1 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)
            self.ln2 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)

    def forward(
        self,
        x: Float[Tensor, "... seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
    ) -> Float[Tensor, "... seq d_model"]:
        if self.norm == "pre":
            x = x + self.attn(self.ln1(x), token_positions, kv_cache, layer)
            return x + self.ffn(self.ln2(x))
        if self.norm == "post":
            x = self.ln1(x + self.attn(x, token_positions, kv_cache, layer))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(x, token_positions, kv_cache, layer)
        return x + self.ffn(x)


class TransformerLM(nn.Module):
    """Token embedding, `num_layers` blocks, final RMSNorm (absent when norm="none"), lm_head.

    `variant_options` are the ModelConfig fields after rope_theta (norm, positions, ffn,
    tie_embeddings, eps). A tied weight gets lm_head's init, which keeps initial logits small.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_ff: int | None,
        rope_theta: float,
        device=None,
        dtype=None,
        **variant_options,
    ):
        super().__init__()
        self.config = cfg = ModelConfig(
            vocab_size,
            context_length,
            d_model,
            num_layers,
            num_heads,
            d_ff,
            rope_theta,
            **variant_options,
        )
        self.token_embeddings = Embedding(vocab_size, d_model, device=device, dtype=dtype)
        # One set of cos/sin tables for every layer (non-persistent: not in the state dict).
        rope = (
            RotaryPositionalEmbedding(
                rope_theta, d_model // num_heads, context_length, device=device
            )
            if cfg.positions == "rope"
            else None
        )
        self.layers = nn.ModuleList(
            TransformerBlock(
                d_model,
                num_heads,
                cfg.d_ff,
                context_length,
                rope_theta,
                device,
                dtype,
                norm=cfg.norm,
                positions=cfg.positions,
                ffn=cfg.ffn,
                eps=cfg.eps,
                rope=rope,
            )
            for _ in range(num_layers)
        )
        self.ln_final = (
            RMSNorm(d_model, eps=cfg.eps, device=device, dtype=dtype)
            if cfg.norm != "none"
            else None
        )
        self.lm_head = Linear(d_model, vocab_size, device=device, dtype=dtype)
        if cfg.tie_embeddings:
            self.token_embeddings.weight = self.lm_head.weight

    @classmethod
    def from_config(cls, cfg: ModelConfig, device=None, dtype=None) -> "TransformerLM":
        return cls(**asdict(cfg), device=device, dtype=dtype)

    def make_kv_cache(self, batch_size: int) -> KVCache:
        """An empty cache for decoding `batch_size` sequences of up to context_length tokens."""
        cfg, weight = self.config, self.token_embeddings.weight
        shape = (batch_size, cfg.num_heads, cfg.context_length, cfg.d_model // cfg.num_heads)
        buffers = [
            torch.zeros(shape, device=weight.device, dtype=weight.dtype)
            for _ in range(2 * cfg.num_layers)
        ]
        return KVCache(keys=buffers[::2], values=buffers[1::2])

    def forward(
        self,
        token_ids: Int[Tensor, "... seq"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
    ) -> Float[Tensor, "... seq vocab_size"]:
        """Unnormalized next-token logits for every input position.

        Positions default to 0..seq-1, or continue from `kv_cache.length` when decoding with a
        cache, in which case only the new tokens' logits are returned and the cache advances.
        """
        self._check_inputs(token_ids, kv_cache)
        x = self.token_embeddings(token_ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, token_positions, kv_cache, i)
        if kv_cache is not None:
            kv_cache.length += token_ids.shape[-1]
        if self.ln_final is not None:
            x = self.ln_final(x)
        return self.lm_head(x)

    def _check_inputs(self, token_ids: Tensor, kv_cache: KVCache | None) -> None:
        cfg, seq = self.config, token_ids.shape[-1]
        if token_ids.is_floating_point():
            raise TypeError(f"token_ids must be an integer tensor; got dtype {token_ids.dtype}")
        if kv_cache is None and seq > cfg.context_length:
            raise ValueError(
                f"sequence of {seq} tokens exceeds context_length={cfg.context_length}; "
                "crop the input to its last context_length tokens"
            )
        if kv_cache is not None:
            if token_ids.dim() != 2 or token_ids.shape[0] != kv_cache.batch_size:
                raise ValueError(
                    f"with a KV cache for batch {kv_cache.batch_size}, token_ids must have shape "
                    f"({kv_cache.batch_size}, seq); got {tuple(token_ids.shape)}"
                )
            if kv_cache.length + seq > kv_cache.capacity:
                raise ValueError(
                    f"KV cache holds {kv_cache.length} of {kv_cache.capacity} positions and cannot take "
                    f"{seq} more; start a new cache with the last tokens of the sequence"
                )
        # One min/max reduction; skipped while torch.compile traces, where it would break the graph.
        if not torch.compiler.is_compiling() and token_ids.numel():
            low, high = torch.aminmax(token_ids)
            if low < 0 or high >= cfg.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, {cfg.vocab_size}); got values in [{int(low)}, {int(high)}]. "
                    "Was the data tokenized with a different vocabulary?"
                )
