import pytest
import torch
import torch.nn.functional as F

from cs336_basics.optim import clip_gradients

from .adapters import run_cross_entropy, run_gradient_clipping, run_softmax


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_pytorch(dim):
    x = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(run_softmax(x, dim), F.softmax(x, dim=dim))
    # Huge values: a softmax without max subtraction overflows exp() to inf and returns NaN.
    for huge in (x + 1e4, x * 1e4):
        torch.testing.assert_close(run_softmax(huge, dim), F.softmax(huge, dim=dim))


def test_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=gen)
    targets = torch.randint(0, 5, (8,), generator=gen)
    torch.testing.assert_close(run_cross_entropy(logits, targets), F.cross_entropy(logits, targets))

    # Logits around 1e4 must not overflow (log-sum-exp with the max taken out).
    big = logits * 1e4
    loss = run_cross_entropy(big, targets)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(big, targets))

    # Extra batch dimensions are averaged over as well.
    logits3 = torch.randn(2, 3, 4, 11, generator=gen)
    targets3 = torch.randint(0, 11, (2, 3, 4), generator=gen)
    torch.testing.assert_close(
        run_cross_entropy(logits3, targets3),
        F.cross_entropy(logits3.reshape(-1, 11), targets3.reshape(-1)),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_backward_matches_torch(dtype):
    """The hand-written backward (softmax - one_hot, scaled by the upstream gradient) against
    autograd through F.cross_entropy on the same logits. bf16 logits: both compute in float32
    and round the gradient once to bf16, so they agree to bf16's rounding (2**-8 relative)."""
    from cs336_basics.nn.functional import cross_entropy

    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=gen) * 4).to(dtype)
    targets = torch.randint(0, 50, (3, 7), generator=gen)
    upstream = torch.tensor(2.5)
    ours, ref = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    (cross_entropy(ours, targets) * upstream).backward()
    (F.cross_entropy(ref.float().flatten(0, 1), targets.flatten()) * upstream).backward()
    assert ours.grad.dtype == dtype
    tol = {"atol": 1e-7, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-5, "rtol": 2**-8}
    torch.testing.assert_close(ours.grad, ref.grad, **tol)


def _params_with_grads(scale: float) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(shape, generator=gen))
        for shape in [(4, 3), (5,), (2, 2, 2), (3,)]
    ]
    for p in params[:-1]:  # the last one has no gradient and must be skipped
        p.grad = scale * torch.randn(p.shape, generator=gen)
    return params


@pytest.mark.parametrize("scale", [10.0, 1e-3])  # above the limit: clipped; below: untouched
def test_gradient_clipping(scale):
    max_norm = 1.0
    ours, ref = _params_with_grads(scale), _params_with_grads(scale)
    before = [p.grad.clone() for p in ours if p.grad is not None]
    run_gradient_clipping(ours, max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    for p, q in zip(ours, ref, strict=True):
        if q.grad is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, q.grad)
    if scale < 1:
        assert all(torch.equal(p.grad, g) for p, g in zip(ours, before))
    # The returned value is the norm before clipping, for logging.
    torch.testing.assert_close(clip_gradients(_params_with_grads(scale), max_norm), ref_norm)


def test_gradient_clipping_without_any_gradient():
    assert float(clip_gradients([torch.nn.Parameter(torch.ones(2))], 1.0)) == 0.0
