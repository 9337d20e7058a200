"""The model's components against independent references built in this file from torch ops."""

import dataclasses
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import cs336_basics.nn
from cs336_basics.nn import transformer
from cs336_basics.nn.functional import causal_attention, cross_entropy
from cs336_basics.nn.layers import (
    Embedding,
    Linear,
    RotaryPositionalEmbedding,
    SwiGLU,
    UngatedFFN,
    swiglu_hidden_size,
)
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
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


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


def ref_mha(x, w, num_heads, theta=None, positions=None, prefix="", ve=None):
    """`ve`: a value embedding added to v before the heads split; q_norm/k_norm gains in `w`
    turn on QK-norm."""
    seq = x.shape[-2]
    v = F.linear(x, w[f"{prefix}v_proj.weight"])
    v = v if ve is None else v + ve
    q, k, v = (
        t.unflatten(-1, (num_heads, -1)).transpose(-3, -2)
        for t in (
            F.linear(x, w[f"{prefix}q_proj.weight"]),
            F.linear(x, w[f"{prefix}k_proj.weight"]),
            v,
        )
    )
    if f"{prefix}q_norm.weight" in w:
        q = F.rms_norm(q, (q.shape[-1],), w[f"{prefix}q_norm.weight"], 1e-5)
        k = F.rms_norm(k, (k.shape[-1],), w[f"{prefix}k_norm.weight"], 1e-5)
    if theta is not None:
        positions = torch.arange(seq) if positions is None else positions
        q, k = (
            ref_rope(q, positions.unsqueeze(-2), theta),
            ref_rope(k, positions.unsqueeze(-2), theta),
        )
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(out.transpose(-3, -2).flatten(-2), w[f"{prefix}output_proj.weight"])


def ref_ffn(x, w, prefix="", ffn="swiglu"):
    hidden = F.linear(x, w[f"{prefix}w1.weight"])
    if ffn == "relu2":
        return F.linear(F.relu(hidden) ** 2, w[f"{prefix}w2.weight"])
    hidden = F.silu(hidden)
    if ffn == "swiglu":
        hidden = hidden * F.linear(x, w[f"{prefix}w3.weight"])
    return F.linear(hidden, w[f"{prefix}w2.weight"])


def ref_block(
    x, w, num_heads, theta, prefix="", norm="pre", positions="rope", ffn="swiglu", ve=None
):
    def ln(name, h):
        return F.rms_norm(h, (h.shape[-1],), w[f"{prefix}{name}.weight"], 1e-5)

    def attn(h):
        return ref_mha(
            h, w, num_heads, theta if positions == "rope" else None, prefix=prefix + "attn.", ve=ve
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


def ref_lm(ids, w, num_layers, num_heads, theta, logit_softcap=None, value_embeddings=0, **variant):
    """The reference LM; qk_norm follows from `w`, the other switches are arguments."""
    x = F.embedding(ids, w["token_embeddings.weight"])
    for i in range(num_layers):
        j = i - (num_layers - value_embeddings)  # value_embeddings serve the last layers
        ve = None
        if j >= 0:
            ve = w[f"value_embeddings.{j}.scale"] * F.embedding(
                ids, w[f"value_embeddings.{j}.weight"]
            )
        x = ref_block(x, w, num_heads, theta, prefix=f"layers.{i}.", ve=ve, **variant)
    if "ln_final.weight" in w:
        x = F.rms_norm(x, (x.shape[-1],), w["ln_final.weight"], 1e-5)
    logits = F.linear(x, w["lm_head.weight"])
    return logits if logit_softcap is None else logit_softcap * torch.tanh(logits / logit_softcap)


def load_random_weights(model, seed=0):
    """Give `model` random weights (a tied lm_head keeps its embedding's); return them."""
    w = random_weights(model, seed)
    if model.config.tie_embeddings:
        w["lm_head.weight"] = w["token_embeddings.weight"]
    model.load_state_dict(w)
    return w


def random_weights(module, seed=0):
    """The module's state dict with fresh values (norm gains too, so they are exercised)."""
    return {
        k: randn(*v.shape, seed=seed + i) / math.sqrt(v.shape[-1] if v.dim() else 1)
        for i, (k, v) in enumerate(module.state_dict().items())
    }


def lm(**variant):
    torch.manual_seed(0)
    return TransformerLM(VOCAB, SEQ, D_MODEL, LAYERS, HEADS, D_FF, THETA, **variant)


def rope(max_seq_len=SEQ):
    return RotaryPositionalEmbedding(THETA, D_MODEL // HEADS, max_seq_len)


# Every switch on (value embeddings in the last layer only, so that one layer has none).
ALL_SWITCHES = {
    "qk_norm": True,
    "ffn": "relu2",
    "zero_init_out": True,
    "logit_softcap": 3.0,
    "value_embeddings": 1,
    "tie_embeddings": True,
}


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


@pytest.mark.parametrize("activation", ["silu", "relu2"])
def test_ungated_ffn_variants(activation):
    ffn = UngatedFFN(D_MODEL, activation=activation)
    assert ffn.w1.weight.shape == (4 * D_MODEL, D_MODEL)
    assert set(ffn.state_dict()) == {"w1.weight", "w2.weight"}
    ffn.load_state_dict(weights := random_weights(ffn))
    x = randn(3, D_MODEL, seed=5)
    close(ffn(x), ref_ffn(x, weights, ffn=activation))
    with pytest.raises(ValueError, match="activation"):
        UngatedFFN(D_MODEL, activation="gelu")


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
    block = TransformerBlock(D_MODEL, HEADS, D_FF, rope())
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
        {"ffn": "relu2"},
        {"norm": "post", "positions": "nope"},
        {"qk_norm": True},
        {"qk_norm": True, "norm": "none", "ffn": "relu2"},
    ],
    ids=str,
)
def test_transformer_block_variants(variant):
    positions = variant.pop("positions", "rope")
    block = TransformerBlock(
        D_MODEL, HEADS, D_FF, rope() if positions == "rope" else None, **variant
    )
    w = random_weights(block)
    if variant.get("norm") == "none":
        assert not any(k.startswith("ln") for k in w)
    if variant.get("ffn") in ("silu", "relu2"):
        assert "ffn.w3.weight" not in w
    assert (
        ("attn.q_norm.weight" in w) == ("attn.k_norm.weight" in w) == variant.get("qk_norm", False)
    )
    block.load_state_dict(w)
    x = randn(2, SEQ, D_MODEL, seed=11)
    variant.pop("qk_norm", None)  # the reference reads it from the weights
    close(block(x), ref_block(x, w, HEADS, THETA, positions=positions, **variant), atol=1e-4)


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
    "variant",
    [
        {"norm": "none"},
        {"norm": "post", "ffn": "silu"},
        {"positions": "nope"},
        {"ffn": "relu2"},
        {"qk_norm": True},
        {"logit_softcap": 2.0},
        {"value_embeddings": 1},
        {"value_embeddings": LAYERS, "norm": "post"},
        ALL_SWITCHES,
        {**ALL_SWITCHES, "attention": "sdpa", "positions": "nope"},
    ],
    ids=str,
)
def test_transformer_lm_variants(variant):
    """Each switch against the reference written in this file, with random weights (so value
    embeddings' scales and zero-initialized projections are not zero)."""
    model = lm(**variant)
    w = load_random_weights(model)
    assert ("ln_final.weight" in w) == (variant.get("norm") != "none")
    ids = torch.randint(0, VOCAB, (2, SEQ))
    ref_variant = {
        k: v
        for k, v in variant.items()
        if k not in ("qk_norm", "zero_init_out", "tie_embeddings", "attention")
    }
    close(model(ids), ref_lm(ids, w, LAYERS, HEADS, THETA, **ref_variant), atol=1e-4)


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
    assert ModelConfig(VOCAB, SEQ, 48, 1, 4, None, ffn="relu2").d_ff == 4 * 48
    assert lm(ffn="silu").layers[0].ffn.w1.weight.shape == (D_FF, D_MODEL)  # an explicit d_ff wins


def test_transformer_lm_overfits_one_batch():
    torch.manual_seed(0)
    model = TransformerLM(VOCAB, 16, 32, 2, 2, 64, THETA)
    ids = torch.randint(0, VOCAB, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ---------------------------------------------------------------- switches


HANDOUT_KEYS = {
    "token_embeddings.weight", "ln_final.weight", "lm_head.weight",
    *(f"layers.{i}.{name}.weight" for i in range(LAYERS) for name in (
        "attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.output_proj",
        "ln1", "ffn.w1", "ffn.w2", "ffn.w3", "ln2",
    )),
}  # fmt: skip


def test_switches_off_by_default_keep_the_handout_model():
    off = {
        "attention": "auto",
        "qk_norm": False,
        "ffn": "swiglu",
        "zero_init_out": False,
        "logit_softcap": None,
        "value_embeddings": 0,
        "tie_embeddings": False,
    }
    default, explicit = lm(), lm(**off)
    assert default.config == explicit.config
    assert set(default.state_dict()) == HANDOUT_KEYS
    for (name, a), (_, b) in zip(default.state_dict().items(), explicit.state_dict().items()):
        assert torch.equal(a, b), name
    ids = torch.randint(0, VOCAB, (2, SEQ))
    assert torch.equal(default(ids), explicit(ids))
    assert default(ids).dtype == torch.float32


def test_every_model_config_field_has_help():
    for f in dataclasses.fields(ModelConfig):
        assert f.metadata.get("help"), f"ModelConfig.{f.name} has no help text"


def test_qk_norm_gives_unit_rms_queries_and_keys(monkeypatch):
    """The q and k that reach the attention kernel have RMS equal to the gain in every head."""
    model = lm(qk_norm=True)
    gain = 2.5
    for layer in model.layers:
        assert layer.attn.q_norm.weight.shape == (D_MODEL // HEADS,)
        torch.nn.init.constant_(layer.attn.q_norm.weight, gain)
        torch.nn.init.constant_(layer.attn.k_norm.weight, gain)
    seen = []

    def spy(q, k, v):
        seen.append((q, k))
        return causal_attention(q, k, v)

    monkeypatch.setattr(transformer, "causal_attention", spy)
    # Large inputs: without the norm, q and k would be far from unit RMS.
    model.token_embeddings.weight.data *= 30
    model(torch.randint(0, VOCAB, (2, SEQ)))
    assert len(seen) == LAYERS
    for q, k in seen:
        for t in (q, k):  # (batch, heads, seq, d_k); RoPE rotates pairs, so the RMS stays
            rms = t.square().mean(-1).sqrt()
            close(rms, torch.full_like(rms, gain), atol=1e-4)
    loss = cross_entropy(
        model(torch.randint(0, VOCAB, (2, SEQ))), torch.randint(0, VOCAB, (2, SEQ))
    )
    loss.backward()
    assert model.layers[0].attn.q_norm.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("norm", ["pre", "none"])
def test_zero_init_out_blocks_start_as_identity(norm):
    model = lm(zero_init_out=True, norm=norm)
    x = randn(2, SEQ, D_MODEL, seed=3)
    for layer in model.layers:
        assert not layer.attn.output_proj.weight.any() and not layer.ffn.w2.weight.any()
        assert layer.attn.q_proj.weight.any() and layer.ffn.w1.weight.any()
        assert torch.equal(layer(x), x)
    ids = torch.randint(0, VOCAB, (2, SEQ))
    hidden = model.token_embeddings(ids)
    if model.ln_final is not None:
        hidden = model.ln_final(hidden)
    assert torch.equal(model(ids), model.lm_head(hidden))
    # Only the initial values differ: the same seed draws every other weight the same.
    for (name, a), (_, b) in zip(model.state_dict().items(), lm(norm=norm).state_dict().items()):
        assert torch.equal(a, b) or name.endswith(("output_proj.weight", "w2.weight")), name
    # The zero matrices get gradients, so they leave zero at the first step.
    cross_entropy(model(ids), ids).backward()
    assert model.layers[-1].attn.output_proj.weight.grad.abs().sum() > 0
    assert model.layers[-1].ffn.w2.weight.grad.abs().sum() > 0


def test_logit_softcap_bounds_logits():
    cap = 2.0
    capped, free = lm(logit_softcap=cap), lm()
    w = load_random_weights(capped)
    w["lm_head.weight"] = 50 * w["lm_head.weight"]  # raw logits far beyond the cap
    capped.load_state_dict(w)
    free.load_state_dict(w)
    ids = torch.randint(0, VOCAB, (2, SEQ))
    raw, logits = free(ids), capped(ids)
    assert raw.abs().max() > 10 * cap
    assert logits.dtype == torch.float32 and logits.abs().max() <= cap
    assert (logits.abs() < cap).float().mean() > 0.5  # tanh saturates only for the extreme ones
    close(logits, cap * torch.tanh(raw / cap))
    cross_entropy(logits, ids).backward()
    for name, p in capped.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert capped.lm_head.weight.grad.abs().sum() > 0
    # In float32 whatever the model's dtype (the cap's tanh needs the precision).
    assert lm(logit_softcap=cap).bfloat16()(ids).dtype == torch.float32


def test_value_embeddings_serve_the_last_layers():
    n = 1
    model = lm(value_embeddings=n)
    assert [k for k in model.state_dict() if k not in HANDOUT_KEYS] == [
        "value_embeddings.0.weight",
        "value_embeddings.0.scale",
    ]
    assert model.value_embeddings[0].weight.shape == (VOCAB, D_MODEL)
    # At init (scale 0) the model is the handout model, weight for weight and output for output.
    base = lm()
    for name, p in base.state_dict().items():
        assert torch.equal(model.state_dict()[name], p), name
    ids = torch.randint(0, VOCAB, (2, SEQ))
    assert torch.equal(model(ids), base(ids))
    # A value embedding changes only the layers it serves: the first layer's output is intact.
    torch.nn.init.constant_(model.value_embeddings[0].scale, 0.7)
    first = []
    model.layers[0].register_forward_hook(lambda m, i, o: first.append(o))
    base.layers[0].register_forward_hook(lambda m, i, o: first.append(o))
    changed, same = model(ids), base(ids)
    assert torch.equal(first[0], first[1]) and not torch.allclose(changed, same)
    # The scale learns from the start; the table once the scale is off zero.
    cross_entropy(changed, ids).backward()
    assert model.value_embeddings[0].scale.grad != 0
    assert model.value_embeddings[0].weight.grad.abs().sum() > 0


def test_sdpa_attention_matches_scratch():
    scratch, sdpa = lm(attention="scratch"), lm(attention="sdpa")
    load_random_weights(sdpa)
    scratch.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, VOCAB, (2, SEQ))
    out_scratch, out_sdpa = scratch(ids), sdpa(ids)
    close(out_sdpa, out_scratch, atol=1e-5)
    cross_entropy(out_scratch, ids).backward()
    cross_entropy(out_sdpa, ids).backward()
    for a, b in zip(scratch.parameters(), sdpa.parameters()):
        close(b.grad, a.grad, atol=1e-6, rtol=1e-4)
    # Decoding against a cache (fewer queries than keys): the mask is bottom-right aligned.
    with torch.no_grad():
        caches = scratch.make_kv_cache(2), sdpa.make_kv_cache(2)
        for model, cache in zip((scratch, sdpa), caches):
            model(ids[:, :5], kv_cache=cache)
        close(sdpa(ids[:, 5:9], kv_cache=caches[1]), scratch(ids[:, 5:9], kv_cache=caches[0]))


def fake_flash_module(available: bool):
    calls = []

    def flash_attention(q, k, v):
        calls.append(q.shape)
        return causal_attention(q, k, v)

    module = types.ModuleType("cs336_basics.nn.flash_attention")
    module.flash_attention = flash_attention
    module.flash_attention_available = lambda device: available
    return module, calls


def install_flash_module(monkeypatch, module):
    """Make `module` (None: nothing) what `from cs336_basics.nn import flash_attention` finds,
    with a fresh "auto" decision."""
    monkeypatch.setitem(sys.modules, "cs336_basics.nn.flash_attention", module)
    if module is None:
        monkeypatch.delattr(cs336_basics.nn, "flash_attention", raising=False)
    else:
        monkeypatch.setattr(cs336_basics.nn, "flash_attention", module, raising=False)
    monkeypatch.setattr(transformer, "_AUTO_ATTENTION", {})


def test_auto_attention_is_scratch_on_cpu(monkeypatch):
    assert transformer.auto_attention(torch.device("cpu")) == "scratch"
    install_flash_module(monkeypatch, None)  # no kernel at all
    assert transformer.auto_attention(torch.device("cpu")) == "scratch"
    with pytest.raises(
        ImportError, match="attention='triton' needs cs336_basics.nn.flash_attention"
    ):
        lm(attention="triton")


@pytest.mark.parametrize("available", [True, False])
def test_attention_dispatch_to_the_triton_module(monkeypatch, available):
    """ "triton" calls the module's flash_attention; "auto" picks it on a CUDA device where
    it says it is available, and never on the CPU (where it would run in the interpreter)."""
    module, calls = fake_flash_module(available)
    install_flash_module(monkeypatch, module)
    ids = torch.randint(0, VOCAB, (2, SEQ))
    lm(attention="triton")(ids)
    assert len(calls) == LAYERS
    out = lm(attention="auto")(ids)
    assert len(calls) == LAYERS
    assert transformer.auto_attention(torch.device("cpu")) == "scratch"
    cuda = transformer.auto_attention(torch.device("cuda"))
    assert cuda == ("triton" if available else "scratch")
    close(out, lm(attention="scratch")(ids))


# ---------------------------------------------------------------- KV cache


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"positions": "nope", "norm": "post"},
        {**ALL_SWITCHES, "value_embeddings": LAYERS},
        {**ALL_SWITCHES, "attention": "sdpa"},
    ],
    ids=str,
)
def test_kv_cache_decoding_matches_full_forward(variant):
    model = lm(**variant)
    load_random_weights(model)  # value embeddings' scales and the zero-initialized matrices too
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
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 3))


def test_check_token_ids():
    """Token ids are checked where they enter (generation, evaluation), not on every forward."""
    model = lm()
    model.check_token_ids([0, VOCAB - 1])
    model.check_token_ids(torch.tensor([[3, 4], [5, VOCAB - 1]]))
    with pytest.raises(ValueError, match=f"prompt: .* token id {VOCAB}, outside .* {VOCAB} ids"):
        model.check_token_ids(torch.tensor([[0, VOCAB]]), "prompt")
    with pytest.raises(ValueError, match="token id -1"):
        model.check_token_ids([0, -1])


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
        ({"attention": "flash"}, "attention"),
        ({"logit_softcap": 0.0}, "logit_softcap"),
        ({"logit_softcap": -30.0}, "logit_softcap"),
        ({"logit_softcap": math.inf}, "logit_softcap"),
        ({"value_embeddings": -1}, "value_embeddings"),
        ({"value_embeddings": 2}, r"value_embeddings.*\[0, num_layers=1\]"),
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


@pytest.mark.parametrize(
    "variant",
    [{}, {**ALL_SWITCHES, "attention": "scratch"}, {**ALL_SWITCHES, "attention": "sdpa"}],
    ids=str,
)
def test_training_step_compiles_without_graph_breaks(variant):
    """Forward and backward of a training step under torch.compile(fullgraph=True) (a graph
    break raises), through AOT autograd, equal to eager."""
    model = lm(**variant)
    load_random_weights(model)
    ids = torch.randint(0, VOCAB, (2, SEQ + 1))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    results = []
    for m in (model, compiled):
        model.zero_grad()
        loss = cross_entropy(m(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    close(compiled_loss, eager_loss)
    for a, b in zip(compiled_grads, eager_grads):
        close(a, b, atol=1e-6, rtol=1e-4)
