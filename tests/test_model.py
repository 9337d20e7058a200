"""The model's components against independent references built in this file from torch ops."""

import math

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.nn.functional import causal_attention
from cs336_basics.nn.layers import Embedding, Linear, SiLUFFN, SwiGLU, swiglu_hidden_size
from cs336_basics.nn.transformer import (
    ModelConfig,
    MultiHeadSelfAttention,
    TransformerBlock,
    TransformerLM,
)

from .adapters import (
    run_embedding,
    run_linear,
    run_multihead_self_attention,
    run_multihead_self_attention_with_rope,
    run_rmsnorm,
    run_rope,
    run_scaled_dot_product_attention,
    run_silu,
    run_swiglu,
    run_transformer_block,
    run_transformer_lm,
)

D_MODEL, HEADS, D_FF, SEQ, THETA, VOCAB, LAYERS = 32, 4, 48, 12, 10000.0, 50, 2


def close(actual, expected, atol=1e-5, rtol=1e-4):
    # Not torch.testing.assert_close: its first call imports torch.distributed (seconds).
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        actual.shape,
        expected.shape,
    )
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), (
        f"max |diff| {(actual - expected).abs().max()}"
    )


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- references (independent)


def ref_rope(x, positions, theta):
    """Naive RoPE: each pair (x[2k], x[2k+1]) as a complex number times e^(i pos theta^(-2k/d))."""
    out = torch.empty_like(x)
    d = x.shape[-1]
    positions = positions.expand(x.shape[:-1]).double()
    for k in range(d // 2):
        z = torch.complex(x[..., 2 * k].double(), x[..., 2 * k + 1].double())
        z = z * torch.polar(torch.ones_like(positions), positions / theta ** (2 * k / d))
        out[..., 2 * k], out[..., 2 * k + 1] = z.real.to(x.dtype), z.imag.to(x.dtype)
    return out


def ref_mha(x, w, num_heads, theta=None, positions=None, prefix=""):
    seq = x.shape[-2]
    heads = [
        F.linear(x, w[f"{prefix}{n}_proj.weight"]).unflatten(-1, (num_heads, -1)).transpose(-3, -2)
        for n in "qkv"
    ]
    q, k, v = heads
    if theta is not None:
        positions = torch.arange(seq) if positions is None else positions
        q, k = (
            ref_rope(q, positions.unsqueeze(-2), theta),
            ref_rope(k, positions.unsqueeze(-2), theta),
        )
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(out.transpose(-3, -2).flatten(-2), w[f"{prefix}output_proj.weight"])


def ref_ffn(x, w, prefix="", ffn="swiglu"):
    hidden = F.silu(F.linear(x, w[f"{prefix}w1.weight"]))
    if ffn == "swiglu":
        hidden = hidden * F.linear(x, w[f"{prefix}w3.weight"])
    return F.linear(hidden, w[f"{prefix}w2.weight"])


def ref_block(x, w, num_heads, theta, prefix="", norm="pre", positions="rope", ffn="swiglu"):
    def ln(name, h):
        return F.rms_norm(h, (h.shape[-1],), w[f"{prefix}{name}.weight"], 1e-5)

    def attn(h):
        return ref_mha(
            h, w, num_heads, theta if positions == "rope" else None, prefix=prefix + "attn."
        )

    def mlp(h):
        return ref_ffn(h, w, prefix + "ffn.", ffn)

    if norm == "pre":
        x = x + attn(ln("ln1", x))
        return x + mlp(ln("ln2", x))
    if norm == "post":
        x = ln("ln1", x + attn(x))
        return ln("ln2", x + mlp(x))
    x = x + attn(x)
    return x + mlp(x)


def ref_lm(ids, w, num_layers, num_heads, theta, **variant):
    x = F.embedding(ids, w["token_embeddings.weight"])
    for i in range(num_layers):
        x = ref_block(x, w, num_heads, theta, prefix=f"layers.{i}.", **variant)
    if "ln_final.weight" in w:
        x = F.rms_norm(x, (x.shape[-1],), w["ln_final.weight"], 1e-5)
    return F.linear(x, w["lm_head.weight"])


def random_weights(module, seed=0):
    """The module's state dict with fresh values (norm gains too, so they are exercised)."""
    return {
        k: randn(*v.shape, seed=seed + i) / math.sqrt(v.shape[-1])
        for i, (k, v) in enumerate(module.state_dict().items())
    }


def lm(**variant):
    torch.manual_seed(0)
    return TransformerLM(VOCAB, SEQ, D_MODEL, LAYERS, HEADS, D_FF, THETA, **variant)


# ---------------------------------------------------------------- layers


def test_linear():
    w, x = randn(7, 5), randn(2, 3, 5, seed=1)
    close(run_linear(5, 7, w, x), F.linear(x, w))
    layer = Linear(256, 512)
    std = math.sqrt(2 / (256 + 512))
    assert layer.weight.shape == (512, 256)
    assert abs(layer.weight.std().item() / std - 1) < 0.05
    assert layer.weight.abs().max() <= 3 * std + 1e-6
    assert list(layer.state_dict()) == ["weight"]


def test_embedding():
    w, ids = randn(11, 6), torch.randint(0, 11, (3, 4, 5))
    close(run_embedding(11, 6, w, ids), F.embedding(ids, w))
    table = Embedding(1000, 64)
    assert abs(table.weight.std().item() - 1) < 0.05 and table.weight.abs().max() <= 3


def test_swiglu():
    w1, w2, w3, x = (
        randn(D_FF, D_MODEL),
        randn(D_MODEL, D_FF, seed=1),
        randn(D_FF, D_MODEL, seed=2),
        randn(2, 5, D_MODEL, seed=3),
    )
    weights = {"w1.weight": w1, "w2.weight": w2, "w3.weight": w3}
    close(run_swiglu(D_MODEL, D_FF, w1, w2, w3, x), ref_ffn(x, weights), atol=1e-4)
    assert swiglu_hidden_size(512) == 1408 and swiglu_hidden_size(768) == 2048
    assert SwiGLU(512).w1.weight.shape == (1408, 512)


def test_silu_ffn_variant():
    ffn = SiLUFFN(D_MODEL)
    assert ffn.w1.weight.shape == (4 * D_MODEL, D_MODEL) and set(ffn.state_dict()) == {
        "w1.weight",
        "w2.weight",
    }
    ffn.load_state_dict(weights := random_weights(ffn))
    x = randn(3, D_MODEL, seed=5)
    close(ffn(x), ref_ffn(x, weights, ffn="silu"))


def test_rmsnorm():
    g, x = randn(D_MODEL), 100 * randn(2, 5, D_MODEL, seed=1)
    close(run_rmsnorm(D_MODEL, 1e-5, g, x), F.rms_norm(x, (D_MODEL,), g, 1e-5))
    # Low-precision input: computed in float32, returned in bfloat16.
    out = run_rmsnorm(D_MODEL, 1e-5, g.bfloat16(), x.bfloat16())
    assert out.dtype == torch.bfloat16
    close(
        out.float(),
        F.rms_norm(x.bfloat16().float(), (D_MODEL,), g.bfloat16().float(), 1e-5),
        atol=0.05,
        rtol=0.02,
    )


def test_silu_matches_pytorch():
    x = 10 * randn(4, 9)
    close(run_silu(x), F.silu(x))


def test_rope():
    x = randn(2, 3, SEQ, 16)
    positions = torch.randint(0, 40, (2, 1, SEQ))  # batch dims that broadcast over heads
    close(run_rope(16, THETA, 40, x, positions), ref_rope(x, positions, THETA))
    close(run_rope(16, 500.0, SEQ, x, torch.arange(SEQ)), ref_rope(x, torch.arange(SEQ), 500.0))
    from cs336_basics.nn.layers import RotaryPositionalEmbedding

    assert RotaryPositionalEmbedding(THETA, 16, SEQ).state_dict() == {}
    with pytest.raises(ValueError, match="even"):
        RotaryPositionalEmbedding(THETA, 15, SEQ)


# ---------------------------------------------------------------- attention


def _check_attention_grads(ours, ref, inputs):
    g = randn(*ours.shape, seed=9)
    for a, b in zip(torch.autograd.grad(ours, inputs, g), torch.autograd.grad(ref, inputs, g)):
        close(a, b, atol=1e-5, rtol=1e-4)


def test_scaled_dot_product_attention():
    q, k, v = (randn(3, 6, 8, seed=s).requires_grad_() for s in range(3))
    mask = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(4)) > 0.5
    mask[..., 0] = True  # every query may see something
    ours = run_scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    close(ours, ref)
    _check_attention_grads(ours, ref, (q, k, v))
    close(run_scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_4d_scaled_dot_product_attention():
    q, k, v = randn(2, 3, 5, 8), randn(2, 3, 7, 8, seed=1), randn(2, 3, 7, 4, seed=2)
    mask = (
        torch.rand(5, 7, generator=torch.Generator().manual_seed(3)) > 0.3
    )  # broadcast over batch dims
    mask[:, 0] = True
    close(
        run_scaled_dot_product_attention(q, k, v, mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    )
    full_mask = mask.expand(2, 3, 5, 7)
    close(
        run_scaled_dot_product_attention(q, k, v, full_mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=full_mask),
    )


@pytest.mark.parametrize("num_q,num_k,block", [(150, 150, 64), (7, 7, 3), (5, 19, 4), (1, 9, 64)])
def test_causal_attention_matches_masked_pytorch(num_q, num_k, block):
    q, k, v = (
        randn(2, 3, num_q, 8).requires_grad_(),
        randn(2, 3, num_k, 8, seed=1),
        randn(2, 3, num_k, 8, seed=2),
    )
    k.requires_grad_(), v.requires_grad_()
    # The queries are the last num_q positions: bottom-right aligned causal mask.
    mask = torch.arange(num_k) <= torch.arange(num_k - num_q, num_k)[:, None]
    ours = causal_attention(q, k, v, block_size=block)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    close(ours, ref)
    _check_attention_grads(ours, ref, (q, k, v))


def test_multihead_self_attention():
    attn = MultiHeadSelfAttention(D_MODEL, HEADS)
    w = random_weights(attn)
    x = randn(2, SEQ, D_MODEL, seed=7)
    ours = run_multihead_self_attention(
        D_MODEL,
        HEADS,
        *(w[f"{n}.weight"] for n in ("q_proj", "k_proj", "v_proj", "output_proj")),
        x,
    )
    close(ours, ref_mha(x, w, HEADS))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(30, 4)


def test_multihead_self_attention_with_rope():
    w = random_weights(MultiHeadSelfAttention(D_MODEL, HEADS))
    weights = [w[f"{n}.weight"] for n in ("q_proj", "k_proj", "v_proj", "output_proj")]
    x = randn(2, SEQ, D_MODEL, seed=7)
    close(
        run_multihead_self_attention_with_rope(D_MODEL, HEADS, SEQ, THETA, *weights, x),
        ref_mha(x, w, HEADS, THETA),
    )
    positions = torch.arange(SEQ).expand(2, SEQ) + torch.tensor([[3], [20]])
    close(
        run_multihead_self_attention_with_rope(D_MODEL, HEADS, 64, THETA, *weights, x, positions),
        ref_mha(x, w, HEADS, THETA, positions),
    )


# ---------------------------------------------------------------- block and LM


def test_transformer_block():
    block = TransformerBlock(D_MODEL, HEADS, D_FF, SEQ, THETA)
    w = random_weights(block)
    assert set(w) == {
        "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight", "attn.output_proj.weight",
        "ln1.weight", "ffn.w1.weight", "ffn.w2.weight", "ffn.w3.weight", "ln2.weight",
    }  # fmt: skip
    x = randn(2, SEQ, D_MODEL, seed=11)
    close(
        run_transformer_block(D_MODEL, HEADS, D_FF, SEQ, THETA, w, x),
        ref_block(x, w, HEADS, THETA),
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "variant",
    [
        {"norm": "post"},
        {"norm": "none"},
        {"positions": "nope"},
        {"ffn": "silu"},
        {"norm": "post", "positions": "nope"},
    ],
)
def test_transformer_block_variants(variant):
    block = TransformerBlock(D_MODEL, HEADS, D_FF, SEQ, THETA, **variant)
    w = random_weights(block)
    if variant.get("norm") == "none":
        assert not any(k.startswith("ln") for k in w)
    if variant.get("ffn") == "silu":
        assert "ffn.w3.weight" not in w
    block.load_state_dict(w)
    x = randn(2, SEQ, D_MODEL, seed=11)
    close(block(x), ref_block(x, w, HEADS, THETA, **variant), atol=1e-4)


def test_transformer_lm():
    model = lm()
    w = random_weights(model)
    ids = torch.randint(0, VOCAB, (3, SEQ))
    close(
        run_transformer_lm(VOCAB, SEQ, D_MODEL, LAYERS, HEADS, D_FF, THETA, w, ids),
        ref_lm(ids, w, LAYERS, HEADS, THETA),
        atol=1e-4,
    )
    assert model.config == ModelConfig(VOCAB, SEQ, D_MODEL, LAYERS, HEADS, D_FF, THETA)
    rebuilt = TransformerLM.from_config(model.config)
    rebuilt.load_state_dict(model.state_dict())
    close(rebuilt(ids), model(ids))


def test_transformer_lm_truncated_input():
    w = random_weights(lm())
    ids = torch.randint(0, VOCAB, (2, SEQ // 2))
    ours = run_transformer_lm(VOCAB, SEQ, D_MODEL, LAYERS, HEADS, D_FF, THETA, w, ids)
    assert ours.shape == (2, SEQ // 2, VOCAB)
    close(ours, ref_lm(ids, w, LAYERS, HEADS, THETA), atol=1e-4)


@pytest.mark.parametrize(
    "variant", [{"norm": "none"}, {"norm": "post", "ffn": "silu"}, {"positions": "nope"}]
)
def test_transformer_lm_variants(variant):
    model = lm(**variant)
    w = random_weights(model)
    assert ("ln_final.weight" in w) == (variant.get("norm") != "none")
    model.load_state_dict(w)
    ids = torch.randint(0, VOCAB, (2, SEQ))
    close(model(ids), ref_lm(ids, w, LAYERS, HEADS, THETA, **variant), atol=1e-4)


def test_transformer_lm_tied_embeddings():
    model = lm(tie_embeddings=True)
    assert model.lm_head.weight is model.token_embeddings.weight
    assert (
        sum(p.numel() for p in model.parameters())
        == sum(p.numel() for p in lm().parameters()) - VOCAB * D_MODEL
    )
    w = random_weights(model)
    w["lm_head.weight"] = w["token_embeddings.weight"]
    model.load_state_dict(w)
    ids = torch.randint(0, VOCAB, (2, SEQ))
    close(model(ids), ref_lm(ids, w, LAYERS, HEADS, THETA), atol=1e-4)


def test_d_ff_defaults_follow_ffn():
    assert ModelConfig(VOCAB, SEQ, 48, 1, 4, None).d_ff == swiglu_hidden_size(48)
    assert ModelConfig(VOCAB, SEQ, 48, 1, 4, None, ffn="silu").d_ff == 4 * 48
    assert lm(ffn="silu").layers[0].ffn.w1.weight.shape == (D_FF, D_MODEL)  # an explicit d_ff wins


def test_transformer_lm_overfits_one_batch():
    torch.manual_seed(0)
    model = TransformerLM(VOCAB, 16, 32, 2, 2, 64, THETA)
    ids = torch.randint(0, VOCAB, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    from cs336_basics.nn.functional import cross_entropy

    for _ in range(150):
        optimizer.zero_grad()
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ---------------------------------------------------------------- KV cache


@pytest.mark.parametrize("variant", [{}, {"positions": "nope", "norm": "post"}])
def test_kv_cache_decoding_matches_full_forward(variant):
    model = lm(**variant)
    ids = torch.randint(0, VOCAB, (2, SEQ))
    cache = model.make_kv_cache(batch_size=2)
    with torch.inference_mode():
        full = model(ids)
        pieces = [model(ids[:, :5], kv_cache=cache)]
        pieces += [model(ids[:, i : i + 1], kv_cache=cache) for i in range(5, SEQ)]
    assert cache.length == SEQ
    close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="KV cache"):
        model(ids[:, :1], kv_cache=cache)
    with pytest.raises(ValueError, match="batch"):
        model(ids[:1, :1], kv_cache=model.make_kv_cache(batch_size=2))


# ---------------------------------------------------------------- bad arguments and compilation


def test_bad_inputs_raise():
    model = lm()
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, SEQ + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.full((1, 3), VOCAB))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.tensor([[0, -1]]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 3))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"num_heads": 5}, "divisible"),
        ({"d_model": 24, "num_heads": 8}, "even"),  # d_k = 3 with RoPE
        ({"vocab_size": 0}, "vocab_size"),
        ({"num_layers": -1}, "num_layers"),
        ({"norm": "middle"}, "norm"),
        ({"positions": "alibi"}, "positions"),
        ({"ffn": "relu"}, "ffn"),
    ],
)
def test_bad_config_raises(change, message):
    args = {
        "vocab_size": VOCAB,
        "context_length": SEQ,
        "d_model": D_MODEL,
        "num_layers": 1,
        "num_heads": HEADS,
        "d_ff": D_FF,
        "rope_theta": THETA,
    }
    with pytest.raises(ValueError, match=message):
        TransformerLM(**{**args, **change})
    ModelConfig(
        **{**args, "d_model": 24, "num_heads": 8, "positions": "nope"}
    )  # odd d_k is fine without RoPE


def test_compiles_without_graph_breaks():
    model = lm()
    ids = torch.randint(0, VOCAB, (2, SEQ))
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a break raises
    close(compiled(ids), model(ids))
