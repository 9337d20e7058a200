"""Causal multi-head self-attention, the Transformer block, the Transformer LM and its KV cache.

Every switch beyond the handout's model is off by default; with all of them off, parameter
names, initialization and outputs are exactly the handout's.
"""

from dataclasses import MISSING, asdict, dataclass, field
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.data import check_token_range
from cs336_basics.nn.functional import causal_attention
from cs336_basics.nn.layers import (
    Embedding,
    Linear,
    RMSNorm,
    RotaryPositionalEmbedding,
    ValueEmbedding,
    make_ffn,
    swiglu_hidden_size,
)

Norm = Literal["pre", "post", "none"]
Positions = Literal["rope", "nope"]
FFN = Literal["swiglu", "silu", "relu2"]
Attention = Literal["auto", "scratch", "triton", "sdpa"]
VARIANTS = {
    "norm": get_args(Norm),
    "positions": get_args(Positions),
    "ffn": get_args(FFN),
    "attention": get_args(Attention),
}


def _check_variants(**chosen: str) -> None:
    for option, value in chosen.items():
        if value not in VARIANTS[option]:
            raise ValueError(f"unknown {option}={value!r}; choose one of {VARIANTS[option]}")


def _field(help: str, default: Any = MISSING) -> Any:
    """A config field with its `--help` text."""
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """Everything needed to rebuild a TransformerLM (saved next to its weights).

    Variants for ablations: `norm` places RMSNorm before ("pre") or after ("post") each
    residual sublayer, or drops every norm ("none"); `positions` is RoPE or no positional
    signal ("nope"); `ffn` is gated SwiGLU or a plain SiLU or ReLU^2 net. `d_ff=None` picks
    the FFN's usual width (about 8/3 d_model for SwiGLU, 4 d_model otherwise). With
    `tie_embeddings`, lm_head and token_embeddings share one weight.

    Switches from recent small-model practice (modded-nanogpt, OLMo 2, Gemma 2), each off by
    default: `qk_norm`, `zero_init_out`, `logit_softcap`, `value_embeddings`; `attention`
    picks the attention kernel (see MultiHeadSelfAttention). Each field's `help` says what it does.
    """

    vocab_size: int = _field(
        "token ids 0..vocab_size-1 (also the size of the BPE tokenizer trained here)"
    )
    context_length: int = _field(
        "tokens per training sequence (and the longest context at generation)"
    )
    d_model: int = _field("width of the residual stream")
    num_layers: int = _field("Transformer blocks")
    num_heads: int = _field("attention heads (must divide d_model)")
    d_ff: int | None = _field(
        "hidden width of the feed-forward net; unset: about 8/3 d_model for swiglu "
        "(a multiple of 64), 4 d_model otherwise",
        None,
    )
    rope_theta: float = _field("RoPE base", 10000.0)
    norm: Norm = _field("RMSNorm before (pre) or after (post) each sublayer, or none", "pre")
    positions: Positions = _field("rope, or nope (no positional signal)", "rope")
    ffn: FFN = _field("swiglu, silu (ungated), or relu2 (ungated, ReLU squared)", "swiglu")
    tie_embeddings: bool = _field("share the embedding and lm_head weights", False)
    eps: float = _field("RMSNorm epsilon", 1e-5)
    attention: Attention = _field(
        "attention kernel: auto (triton where flash_attention_available, else scratch), "
        "scratch (ours, blockwise), triton (our Triton flash attention), "
        "sdpa (torch's scaled_dot_product_attention, a comparison peer)",
        "auto",
    )
    qk_norm: bool = _field(
        "RMSNorm on each head's queries and keys before RoPE (learnable gains of size d_k)", False
    )
    zero_init_out: bool = _field(
        "start every attention output_proj and FFN w2 at zero, so each pre-norm block "
        "starts as the identity",
        False,
    )
    logit_softcap: float | None = _field(
        "bound the logits smoothly: cap * tanh(logits / cap), in float32; unset: no cap", None
    )
    value_embeddings: int = _field(
        "the last N layers each add scale * table[token] to their attention values "
        "(N vocab_size x d_model tables, scales starting at 0); 0: off",
        0,
    )

    def __post_init__(self):
        _check_variants(
            norm=self.norm, positions=self.positions, ffn=self.ffn, attention=self.attention
        )
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
        if self.logit_softcap is not None and not 0 < self.logit_softcap < float("inf"):
            raise ValueError(
                f"logit_softcap must be a positive number (or unset for no cap); got {self.logit_softcap}"
            )
        if not 0 <= self.value_embeddings <= self.num_layers:
            raise ValueError(
                f"value_embeddings counts the last layers that get one, so it must lie in "
                f"[0, num_layers={self.num_layers}]; got {self.value_embeddings}"
            )


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


def sdpa_causal_attention(
    q: Float[Tensor, "... queries d_k"],
    k: Float[Tensor, "... keys d_k"],
    v: Float[Tensor, "... keys d_v"],
) -> Float[Tensor, "... queries d_v"]:
    """`causal_attention`'s semantics (the queries are the last keys) on torch's fused kernel.

    An opt-in comparison peer (attention="sdpa"), and the one place model code steps outside
    the from-scratch rule: it calls torch.nn.functional.scaled_dot_product_attention.
    """
    num_q, num_k = q.shape[-2], k.shape[-2]
    if num_q == num_k:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    # Decoding against a cache: a causal mask aligned to the bottom-right corner.
    mask = torch.ones(num_q, num_k, dtype=torch.bool, device=q.device).tril(num_k - num_q)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _flash_attention_module():
    """cs336_basics.nn.flash_attention (the Triton kernel), imported on first use."""
    try:
        from cs336_basics.nn import flash_attention
    except ImportError as e:
        raise ImportError(
            "attention='triton' needs cs336_basics.nn.flash_attention (the Triton kernel), "
            f"which cannot be imported here ({e}); use attention='auto', 'scratch' or 'sdpa'"
        ) from e
    return flash_attention


_AUTO_ATTENTION: dict[torch.device, str] = {}


@torch.compiler.assume_constant_result  # torch.compile takes the answer as a constant
def auto_attention(device: torch.device) -> str:
    """What attention="auto" means on `device`: "triton" on a CUDA GPU the Triton kernel
    supports, else "scratch" (on CPU the kernel runs only under Triton's slow interpreter,
    which is for checking it, not for training). Decided once per device."""
    if device not in _AUTO_ATTENTION:
        try:
            available = device.type == "cuda" and (
                _flash_attention_module().flash_attention_available(device)
            )
        except ImportError:
            available = False
        _AUTO_ATTENTION[device] = "triton" if available else "scratch"
    return _AUTO_ATTENTION[device]


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention, with RoPE on queries and keys when `rope` is given.

    q/k/v/output weights are (d_model, d_model), rows (or columns) grouped head by head. (One
    fused q/k/v matmul measured no faster on CPU than three, so they stay separate.)
    `qk_norm` adds RMSNorms `q_norm`/`k_norm` (gains of size d_k, shared by the heads) on each
    head's queries and keys before RoPE. `attention` picks the kernel: "scratch" is
    `cs336_basics.nn.functional.causal_attention`; "triton" is
    `cs336_basics.nn.flash_attention.flash_attention`; "sdpa" is torch's
    scaled_dot_product_attention (`sdpa_causal_attention`, a peer outside the from-scratch
    rule); "auto" is triton on a CUDA GPU where that module's `flash_attention_available`
    says so, else scratch.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope: RotaryPositionalEmbedding | None = None,
        device=None,
        dtype=None,
        *,
        qk_norm: bool = False,
        attention: str = "auto",
        eps: float = 1e-5,
    ):
        super().__init__()
        _check_variants(attention=attention)
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads, self.d_k = num_heads, d_model // num_heads
        if rope is not None and rope.d_k != self.d_k:
            raise ValueError(
                f"rope was built for d_k={rope.d_k}, but this attention has d_k={self.d_k}"
            )
        if attention == "triton":
            _flash_attention_module()  # a missing kernel fails here, not at the first forward
        self.attention = attention
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.rope = rope
        if qk_norm:
            self.q_norm = RMSNorm(self.d_k, eps=eps, device=device, dtype=dtype)
            self.k_norm = RMSNorm(self.d_k, eps=eps, device=device, dtype=dtype)
        self.qk_norm = qk_norm

    def forward(
        self,
        x: Float[Tensor, "... seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        value_embedding: Float[Tensor, "... seq d_model"] | None = None,
    ) -> Float[Tensor, "... seq d_model"]:
        """With `kv_cache`, x holds only new tokens; they attend to every cached one too.
        `value_embedding` is added to the values before they are split into heads (and cached)."""
        seq = x.shape[-2]
        start = 0 if kv_cache is None else kv_cache.length
        v = self.v_proj(x)
        if value_embedding is not None:
            v = v + value_embedding.to(v.dtype)
        q, k, v = (
            rearrange(t, "... s (h d) -> ... h s d", h=self.num_heads)
            for t in (self.q_proj(x), self.k_proj(x), v)
        )
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(start, start + seq, device=x.device)
            positions = token_positions.unsqueeze(-2)  # broadcast over heads
            q, k = self.rope(q, positions), self.rope(k, positions)
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)
        out = self._attend(q, k, v)  # the new queries are the last of the keys
        return self.output_proj(rearrange(out, "... h s d -> ... s (h d)"))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        kind = auto_attention(q.device) if self.attention == "auto" else self.attention
        if kind == "scratch":
            return causal_attention(q, k, v)
        if kind == "sdpa":
            return sdpa_causal_attention(q, k, v)
        return _flash_attention_module().flash_attention(q, k, v)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, d_k={self.d_k}, attention={self.attention}"


class TransformerBlock(nn.Module):
    """Attention then feed-forward, each a residual sublayer; RMSNorm placement per `norm`.

    pre:  z = x + MHA(ln1(x)),  y = z + FFN(ln2(z))
    post: z = ln1(x + MHA(x)),  y = ln2(z + FFN(z))
    none: z = x + MHA(x),       y = z + FFN(z)

    `rope` is the RoPE module to use (the LM shares one among its blocks); None means no
    positional signal. `zero_init_out` starts attn.output_proj and ffn.w2 at zero, so both
    sublayers add nothing and a pre-norm (or norm-free) block starts as the identity.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int | None,
        rope: RotaryPositionalEmbedding | None,
        device=None,
        dtype=None,
        *,
        norm: str = "pre",
        ffn: str = "swiglu",
        eps: float = 1e-5,
        qk_norm: bool = False,
        zero_init_out: bool = False,
        attention: str = "auto",
    ):
        super().__init__()
        _check_variants(norm=norm, ffn=ffn)
        self.norm = norm
        self.attn = MultiHeadSelfAttention(
            d_model,
            num_heads,
            rope=rope,
            device=device,
            dtype=dtype,
            qk_norm=qk_norm,
            attention=attention,
            eps=eps,
        )
        self.ffn = make_ffn(ffn, d_model, d_ff, device=device, dtype=dtype)
        if norm != "none":
            self.ln1 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)
            self.ln2 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)
        if zero_init_out:
            nn.init.zeros_(self.attn.output_proj.weight)
            nn.init.zeros_(self.ffn.w2.weight)

    def forward(
        self,
        x: Float[Tensor, "... seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        value_embedding: Float[Tensor, "... seq d_model"] | None = None,
    ) -> Float[Tensor, "... seq d_model"]:
        def attn(h: Tensor) -> Tensor:
            return self.attn(h, token_positions, kv_cache, layer, value_embedding)

        if self.norm == "pre":
            x = x + attn(self.ln1(x))
            return x + self.ffn(self.ln2(x))
        if self.norm == "post":
            x = self.ln1(x + attn(x))
            return self.ln2(x + self.ffn(x))
        x = x + attn(x)
        return x + self.ffn(x)


class TransformerLM(nn.Module):
    """Token embedding, `num_layers` blocks, final RMSNorm (absent when norm="none"), lm_head.

    `variant_options` are the ModelConfig fields after rope_theta (norm, positions, ffn,
    tie_embeddings, eps, attention, qk_norm, zero_init_out, logit_softcap, value_embeddings).
    A tied weight gets lm_head's init, which keeps initial logits small. Value-embedding
    tables are drawn last, so every other weight starts as in the model without them.

    Token ids are not range-checked here (on a GPU that check would cost a host sync per
    forward); check them where they enter, with `check_token_ids`.
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
                rope,
                device,
                dtype,
                norm=cfg.norm,
                ffn=cfg.ffn,
                eps=cfg.eps,
                qk_norm=cfg.qk_norm,
                zero_init_out=cfg.zero_init_out,
                attention=cfg.attention,
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
        # value_embeddings[j] serves layer num_layers - value_embeddings + j.
        self.value_embeddings = nn.ModuleList(
            ValueEmbedding(vocab_size, d_model, device=device, dtype=dtype)
            for _ in range(cfg.value_embeddings)
        )

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
        """Unnormalized next-token logits for every input position (float32 with logit_softcap).

        Positions default to 0..seq-1, or continue from `kv_cache.length` when decoding with a
        cache, in which case only the new tokens' logits are returned and the cache advances.
        """
        self._check_inputs(token_ids, kv_cache)
        x = self.token_embeddings(token_ids)
        first_ve = len(self.layers) - len(self.value_embeddings)
        for i, layer in enumerate(self.layers):
            ve = self.value_embeddings[i - first_ve](token_ids) if i >= first_ve else None
            x = layer(x, token_positions, kv_cache, i, ve)
        if kv_cache is not None:
            kv_cache.length += token_ids.shape[-1]
        if self.ln_final is not None:
            x = self.ln_final(x)
        logits = self.lm_head(x)
        cap = self.config.logit_softcap
        if cap is not None:
            logits = cap * torch.tanh(logits.float() / cap)
        return logits

    def check_token_ids(self, token_ids: Tensor | list[int], what: str = "token ids") -> None:
        """Raise ValueError unless every id lies in [0, vocab_size); `what` names them in the
        message. For ids entering from outside (prompts, evaluation data): one host sync."""
        ids = torch.as_tensor(token_ids).detach().flatten().cpu().numpy()
        try:
            check_token_range(ids, self.config.vocab_size)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None

    def _check_inputs(self, token_ids: Tensor, kv_cache: KVCache | None) -> None:
        """Shape and dtype checks, which need no sync with the device."""
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
