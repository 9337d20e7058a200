"""Our TransformerLM as a Hugging Face `LlamaForCausalLM`: its config.json and its weights.

The two models compute the same function once three layouts are translated:
- names: `layers.{i}.attn.q_proj` is `model.layers.{i}.self_attn.q_proj`, SwiGLU's w1/w3/w2
  are Llama's gate/up/down projections, ln1/ln2 the input/post-attention norms;
- RoPE: we rotate interleaved pairs (x[2k], x[2k+1]) of each head, Llama rotates the halves
  (x[k], x[k + d_k/2]) with the same angles. Reordering the rows of the q and k projections
  within each head moves feature 2k to k and 2k+1 to k + d_k/2; attention only takes dot
  products of q with k, which a permutation applied to both leaves unchanged;
- a tied head: Llama stores only the embedding and sets `tie_word_embeddings`.
"""

import dataclasses

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from cs336_basics.nn.transformer import ModelConfig

# Switches whose other values Llama cannot express: the value it needs, and why.
LLAMA_LAYOUT: dict[str, tuple[object, str]] = {
    "norm": ("pre", "Llama normalizes the input of each sublayer (pre-norm)"),
    "positions": ("rope", "Llama always rotates queries and keys (RoPE)"),
    "ffn": ("swiglu", "Llama's feed-forward net is SwiGLU"),
    "qk_norm": (False, "Llama has no norm on queries and keys"),
    "logit_softcap": (None, "Llama does not cap its logits"),
    "value_embeddings": (0, "Llama has no value embeddings"),
}
# Fields that the export maps, and fields that change nothing a trained model computes.
MAPPED = {
    "vocab_size",
    "context_length",
    "d_model",
    "num_layers",
    "num_heads",
    "d_ff",
    "rope_theta",
    "tie_embeddings",
    "eps",
}
NO_EFFECT = {"zero_init_out": "an initialization", "attention": "a choice of kernel"}


class NotExportableError(ValueError):
    """The model uses a switch that the target architecture cannot express."""


def check_llama_compatible(cfg: ModelConfig) -> None:
    """Raise NotExportableError naming every switch of `cfg` that Llama cannot express.

    A field this module does not know (a switch added later) is refused when it is not at
    its default, rather than exported as if it were off.
    """
    problems = []
    for name, (needed, why) in LLAMA_LAYOUT.items():
        value = getattr(cfg, name, needed)
        if value != needed:
            problems.append(f"model.{name}={value!r}: {why}; only {needed!r} can be exported")
    for field in dataclasses.fields(cfg):
        if field.name in MAPPED or field.name in NO_EFFECT or field.name in LLAMA_LAYOUT:
            continue
        if field.default is dataclasses.MISSING or getattr(cfg, field.name) != field.default:
            problems.append(
                f"model.{field.name}={getattr(cfg, field.name)!r}: the export does not know this "
                "switch; teach cs336_basics/export/llama.py how Llama expresses it"
            )
    if problems:
        raise NotExportableError("this model cannot be exported as a Llama: " + "; ".join(problems))


def llama_config(
    cfg: ModelConfig,
    *,
    dtype: torch.dtype = torch.float32,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> dict:
    """config.json of the equivalent `LlamaForCausalLM` (no biases, no grouped KV heads)."""
    check_llama_compatible(cfg)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_heads,
        "head_dim": cfg.d_model // cfg.num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.eps,
        # transformers 5 reads rope_parameters; older readers (and vLLM on them) rope_theta.
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }


def interleaved_to_halves(
    weight: Float[Tensor, "d_out d_in"], num_heads: int
) -> Float[Tensor, "d_out d_in"]:
    """Reorder a q or k projection's rows within each head from RoPE pairs (2k, 2k+1) to
    rotate-half pairs (k, k + d_k/2): output rows of a head are its even rows, then its odd."""
    return rearrange(weight, "(h k two) d_in -> (h two k) d_in", h=num_heads, two=2)


def llama_state_dict(
    state: dict[str, Tensor], cfg: ModelConfig, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """Our state dict under Llama's names and layout, as contiguous `dtype` tensors.

    Raises ValueError when `state` lacks a weight or holds one that Llama has no place for.
    """
    check_llama_compatible(cfg)
    names = {"token_embeddings.weight": "model.embed_tokens.weight"}
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    names["ln_final.weight"] = "model.norm.weight"
    ours_to_llama = {
        "attn.q_proj": "self_attn.q_proj",
        "attn.k_proj": "self_attn.k_proj",
        "attn.v_proj": "self_attn.v_proj",
        "attn.output_proj": "self_attn.o_proj",
        "ffn.w1": "mlp.gate_proj",
        "ffn.w3": "mlp.up_proj",
        "ffn.w2": "mlp.down_proj",
        "ln1": "input_layernorm",
        "ln2": "post_attention_layernorm",
    }
    for i in range(cfg.num_layers):
        for ours, llama in ours_to_llama.items():
            names[f"layers.{i}.{ours}.weight"] = f"model.layers.{i}.{llama}.weight"

    # A tied model's state dict lists the shared weight under both names.
    unplaced = set(state) - set(names) - ({"lm_head.weight"} if cfg.tie_embeddings else set())
    missing = set(names) - set(state)
    if unplaced or missing:
        raise ValueError(
            f"the weights do not match a Llama of this config: missing {sorted(missing)}, "
            f"no place in Llama for {sorted(unplaced)}"
        )
    out = {}
    for ours, llama in names.items():
        weight = state[ours].detach()
        if ours.endswith(("q_proj.weight", "k_proj.weight")):
            weight = interleaved_to_halves(weight, cfg.num_heads)
        out[llama] = weight.to(dtype=dtype, device="cpu").contiguous()
    return out
