"""The Triton FlashAttention kernel against the scratch path and a float64 reference.

Without CUDA these run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
which is slow, so shapes are tiny but still span several tiles (interpreted tiles are 16 and 32
wide), partial tiles, head sizes that are padded, and fewer queries than keys.
"""

import pytest
import torch

from cs336_basics.nn.flash_attention import flash_attention, flash_attention_available
from cs336_basics.nn.functional import causal_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not flash_attention_available(DEVICE), reason="needs CUDA, or TRITON_INTERPRET=1 on CPU"
)


@pytest.fixture(autouse=True)
def gpu_configs(monkeypatch) -> dict:
    """On a GPU the tests check results, not speed: each kernel runs its first config instead
    of autotuning (each config, head size and dtype is a compile of seconds). Returns the full
    lists, by kernel."""
    if DEVICE != "cuda":
        return {}
    full = {name: tuned.configs for name, tuned in tuned_kernels().items()}
    for name, tuned in tuned_kernels().items():
        monkeypatch.setattr(tuned, "configs", full[name][:1])
    return full


def tuned_kernels() -> dict:
    from cs336_basics.nn import flash_attention_kernels as kernels

    return {"forward": kernels._forward, "dq": kernels._backward_dq, "dkdv": kernels._backward_dkdv}


def reference(q, k, v):
    """Causal attention in float64, the queries being the last keys, written out."""
    num_q, num_k = q.shape[-2], k.shape[-2]
    scores = q.double() @ k.double().transpose(-2, -1) / q.shape[-1] ** 0.5
    visible = torch.ones(num_q, num_k, dtype=torch.bool, device=q.device).tril(num_k - num_q)
    return scores.masked_fill(~visible, float("-inf")).softmax(-1) @ v.double()


def randn(*shape, seed, dtype=torch.float32):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x.to(DEVICE, dtype)


def qkv(lead, num_q, num_k, d, dtype=torch.float32):
    return randn(*lead, num_q, d, seed=0, dtype=dtype), *(
        randn(*lead, num_k, d, seed=s, dtype=dtype) for s in (1, 2)
    )


def out_and_grads(attention, q, k, v):
    """attention's output and the gradients of <output, G> for a fixed random G (in q's dtype,
    so that a float64 reference gets the same G)."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = attention(q, k, v)
    grad = randn(*out.shape, seed=3, dtype=q.dtype).to(out.dtype)
    return [out, *torch.autograd.grad(out, (q, k, v), grad)]


def close(actual, expected, atol, rtol=0.0):
    # Not torch.testing.assert_close: its first call imports torch.distributed (seconds).
    for name, a, b in zip(("out", "dq", "dk", "dv"), actual, expected):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        error = (a.double() - b.double()).abs().max().item()
        assert torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol), f"{name}: {error}"


@pytest.mark.parametrize(
    "num_q,num_k,d",
    [(1, 1, 16), (7, 7, 32), (16, 16, 16), (33, 33, 32), (65, 65, 16), (5, 40, 16), (1, 17, 32)],
)
def test_matches_scratch_and_float64_in_float32(num_q, num_k, d):
    q, k, v = qkv((2, 2), num_q, num_k, d)
    ours = out_and_grads(flash_attention, q, k, v)
    assert ours[0].dtype == torch.float32
    close(ours, out_and_grads(causal_attention, q, k, v), atol=2e-5)
    close(ours, out_and_grads(reference, q, k, v), atol=2e-5)


@pytest.mark.parametrize("d", [1, 8, 24, 40])
def test_head_sizes_padded_to_a_tile(d):
    q, k, v = qkv((1, 2), 19, 19, d)
    close(out_and_grads(flash_attention, q, k, v), out_and_grads(reference, q, k, v), atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_q,num_k", [(33, 33), (9, 40)])
def test_half_precision(dtype, num_q, num_k):
    """In bf16 (8-bit significand) each output and gradient element is rounded once, from sums
    kept in float32: the errors against float64 are about 2^-9 relative, below 1e-2 absolute on
    these O(1) values (2e-3 in fp16), and so are the scratch path's."""
    q, k, v = qkv((2, 2), num_q, num_k, 32, dtype)
    ours = out_and_grads(flash_attention, q, k, v)
    assert all(x.dtype == dtype for x in ours)
    atol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    close(ours, out_and_grads(reference, q, k, v), atol=atol, rtol=atol)
    close(out_and_grads(causal_attention, q, k, v), out_and_grads(reference, q, k, v), atol, atol)


def test_model_layouts():
    """Strided views as the model passes them (heads split from (batch, seq, heads * d), keys
    sliced from a KV cache buffer), and 2-D / 3-D / 5-D inputs."""
    batch, seq, heads, d = 2, 21, 2, 16
    x = randn(batch, seq, heads * d, seed=4)
    q = x.view(batch, seq, heads, d).transpose(1, 2)  # (batch, heads, seq, d), not contiguous
    cache = randn(batch, heads, 40, d, seed=5)
    k, v = cache[:, :, :seq], cache.flip(2)[:, :, :seq]
    assert not q.is_contiguous() and not k.is_contiguous()
    ours = out_and_grads(flash_attention, q, k, v)
    close(ours, out_and_grads(reference, q, k, v), atol=2e-5)
    assert ours[0].stride() == q.stride()  # the output keeps q's layout: merging heads is a view
    for shape in [(seq, d), (heads, seq, d), (1, batch, heads, seq, d)]:
        q, k, v = qkv(shape[:-2], seq, seq, d)
        close(out_and_grads(flash_attention, q, k, v), out_and_grads(reference, q, k, v), 2e-5)


def test_no_queries():
    q, k, v = qkv((1, 2), 0, 5, 16)
    out, dq, dk, dv = out_and_grads(flash_attention, q, k, v)
    assert out.shape == (1, 2, 0, 16) and dq.shape == q.shape
    assert not dk.any() and not dv.any()


def test_autocast_casts_inputs():
    q, k, v = qkv((1, 2), 17, 17, 16)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        out, *grads = out_and_grads(flash_attention, q, k, v)
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.float32 for g in grads)
    bf16 = out_and_grads(flash_attention, *(x.bfloat16() for x in (q, k, v)))
    close([out, *grads], bf16, atol=0.0)  # the same as casting first, exactly


@pytest.mark.parametrize(
    "blocks",
    [
        {"forward": (16, 16), "dq": (16, 16), "dkdv": (16, 16)},
        {"forward": (16, 32), "dq": (16, 32), "dkdv": (32, 16)},
    ],
)
def test_other_tiles(monkeypatch, blocks):
    """The block arithmetic holds for other tile shapes (BLOCK_M, BLOCK_N)."""
    import triton

    for name, (block_m, block_n) in blocks.items():
        config = triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n})
        monkeypatch.setattr(tuned_kernels()[name], "configs", [config])
    for num_q, num_k in [(33, 33), (9, 40)]:
        q, k, v = qkv((1, 2), num_q, num_k, 16)
        close(out_and_grads(flash_attention, q, k, v), out_and_grads(reference, q, k, v), 2e-5)


@pytest.mark.skipif(DEVICE != "cuda", reason="interpreted, each kernel has one config")
def test_every_autotuned_config(monkeypatch, gpu_configs):
    """Each GPU config of each kernel (the other kernels at their first), bf16, d = 64."""
    cases = [
        qkv((2, 3), num_q, num_k, 64, torch.bfloat16) for num_q, num_k in [(300, 300), (70, 300)]
    ]
    for name, configs in gpu_configs.items():
        for config in configs:
            monkeypatch.setattr(tuned_kernels()[name], "configs", [config])
            for q, k, v in cases:
                ours = out_and_grads(flash_attention, q, k, v)
                close(ours, out_and_grads(reference, q, k, v), atol=2e-2, rtol=2e-2)
        monkeypatch.setattr(tuned_kernels()[name], "configs", configs[:1])


def test_compiles_without_graph_breaks():
    """A custom op: torch.compile(fullgraph=True) traces through it, forward and backward.
    aot_eager runs dynamo, fake tensors and AOT autograd (inductor works too, but compiling its
    C++ takes about a minute here)."""

    def block(q, k, v):
        return flash_attention(q * 2, k, v).sin()

    q, k, v = qkv((1, 2), 20, 20, 16)
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    close(out_and_grads(compiled, q, k, v), out_and_grads(block, q, k, v), atol=1e-6)


@pytest.mark.parametrize(
    "shapes,dtype,error,match",
    [
        (((2, 4, 16), (2, 3, 16), (2, 3, 16)), torch.float32, ValueError, "more queries"),
        (((2, 3, 16), (1, 3, 16), (1, 3, 16)), torch.float32, ValueError, "leading dims"),
        (((3, 16), (3, 16), (3, 8)), torch.float32, ValueError, "one head size"),
        (((3, 256), (3, 256), (3, 256)), torch.float32, ValueError, "head size 256"),
        (((3, 16), (3, 16), (3, 16)), torch.float64, TypeError, "one dtype among"),
    ],
)
def test_bad_inputs_get_clear_errors(shapes, dtype, error, match):
    q, k, v = (torch.zeros(shape, dtype=dtype, device=DEVICE) for shape in shapes)
    with pytest.raises(error, match=match):
        flash_attention(q, k, v)


def test_availability():
    assert flash_attention_available(DEVICE)
    assert flash_attention_available(DEVICE, head_dim=128)
    assert not flash_attention_available(DEVICE, head_dim=129)
    assert not flash_attention_available("meta")


def test_model_with_triton_attention_matches_scratch():
    """The whole model on CPU tensors through the interpreter: logits, every gradient, and
    decoding against a KV cache (fewer queries than keys)."""
    from cs336_basics.nn.transformer import TransformerLM

    shape = dict(vocab_size=50, context_length=24, d_model=32, num_layers=2, num_heads=2,
                 d_ff=64, rope_theta=10000.0)  # fmt: skip
    torch.manual_seed(0)
    ours = TransformerLM(**shape, attention="triton")
    scratch = TransformerLM(**shape, attention="scratch")
    scratch.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 50, (2, 19))
    for model in (ours, scratch):
        model(ids).square().mean().backward()
    torch.testing.assert_close(ours(ids), scratch(ids), atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(ours.named_parameters(), scratch.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)
    cache = ours.make_kv_cache(batch_size=2)
    with torch.no_grad():
        pieces = [ours(ids[:, :7], kv_cache=cache)]
        pieces += [ours(ids[:, i : i + 1], kv_cache=cache) for i in range(7, 19)]
        torch.testing.assert_close(torch.cat(pieces, 1), scratch(ids), atol=1e-5, rtol=1e-5)
