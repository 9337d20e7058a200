import itertools
import math

import pytest
import torch

from cs336_basics.optim import SGD, AdamW, get_lr_cosine_schedule
from cs336_basics.optim.adamw import _CPU_BATCH

from .adapters import get_adamw_cls, run_get_lr_cosine_schedule


def _fit_linear(opt_class, steps: int = 1000) -> torch.Tensor:
    """The autograder's check: a 3->2 linear map fitted with (lr 1e-3, decay 0.01) AdamW."""
    torch.manual_seed(42)
    model = torch.nn.Linear(3, 2, bias=False)
    opt = opt_class(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    for _ in range(steps):
        opt.zero_grad()
        x = torch.rand(3)
        target = torch.stack([x[0] + x[1], -x[2]])
        ((target - model(x)) ** 2).sum().backward()
        opt.step()
    return model.weight.detach()


def _shapes_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(17, 8),
        torch.nn.Linear(8, 12),
        torch.nn.LayerNorm(12),
        torch.nn.Linear(12, 5),
    )


def _param_groups(model: torch.nn.Module) -> list[dict]:
    """Two groups with different hyperparameters: matrices decay, vectors (biases, norms) not."""
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    return [
        {"params": matrices},
        {"params": vectors, "lr": 3e-3, "weight_decay": 0.0, "betas": (0.8, 0.95)},
    ]


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 17, (4, 6), generator=gen)
        opt.zero_grad()
        out = model(ids)
        (out.square().mean() + out[..., 0].mean()).backward()
        opt.step()


def test_adamw():
    # As the autograder runs it: through the adapter, against torch.optim.AdamW.
    torch.testing.assert_close(
        _fit_linear(get_adamw_cls()), _fit_linear(torch.optim.AdamW), rtol=0, atol=1e-6
    )

    # Several shapes and param groups, many steps, against torch's implementation.
    ours_model, ref_model = _shapes_net(), _shapes_net()
    kwargs = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}
    ours = AdamW(_param_groups(ours_model), **kwargs)
    ref = torch.optim.AdamW(_param_groups(ref_model), **kwargs)
    _train(ours_model, ours, 100)
    _train(ref_model, ref, 100)
    for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)
        state, ref_state = ours.state[p], ref.state[q]
        assert state["step"] == int(ref_state["step"]) == 100
        torch.testing.assert_close(state["exp_avg"], ref_state["exp_avg"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(
            state["exp_avg_sq"], ref_state["exp_avg_sq"], rtol=1e-4, atol=1e-9
        )


def test_adamw_large_and_strided_params():
    # Big enough to be cut into several CPU batches, plus a transposed (non-contiguous) one.
    def params():
        gen = torch.Generator().manual_seed(0)
        shapes = [(_CPU_BATCH // 256 + 3, 256), (7,), (30, 20)]
        tensors = [torch.randn(s, generator=gen) for s in shapes]
        tensors[-1] = tensors[-1].t()
        return [torch.nn.Parameter(t) for t in tensors]

    ours, ref = params(), params()
    assert not ours[-1].is_contiguous()
    opt, ref_opt = (
        AdamW(ours, lr=1e-2, weight_decay=0.1),
        torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.1),
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        for p, q in zip(ours, ref):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_opt.state[q]["exp_avg_sq"])


def test_adamw_skips_params_without_grad_and_follows_lr_changes():
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = AdamW([used, unused], lr=0.1, weight_decay=0.0)
    used.grad = torch.ones(3)
    opt.step()
    # First step: m/(sqrt(v)+eps) is sign(g) and the bias-corrected step size is lr.
    torch.testing.assert_close(used.detach(), torch.full((3,), 0.9))
    assert torch.equal(unused, torch.ones(3)) and unused not in opt.state
    opt.param_groups[0]["lr"] = 0.0
    opt.step()
    torch.testing.assert_close(used.detach(), torch.full((3,), 0.9))
    assert opt.state[used]["step"] == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": -1.0},
        {"betas": (1.0, 0.999)},
        {"betas": (0.9, -0.1)},
        {"eps": -1e-8},
        {"weight_decay": -0.1},
    ],
)
def test_adamw_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        AdamW([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def _reference_schedule(it, lr_max, lr_min, warmup, cycle):
    """Same schedule, written with cos^2(x/2) = (1 + cos x)/2 and an explicit phase check."""
    if warmup > 0 and it < warmup:
        return lr_max * it / warmup
    if it > cycle or cycle == warmup:
        return lr_min
    return (
        lr_min + (lr_max - lr_min) * math.cos(0.5 * math.pi * (it - warmup) / (cycle - warmup)) ** 2
    )


@pytest.mark.parametrize("warmup, cycle", [(7, 21), (0, 10), (1, 2), (5, 5)])
def test_get_lr_cosine_schedule(warmup, cycle):
    lr_max, lr_min = 1.0, 0.1
    for it in range(cycle + 5):
        expected = _reference_schedule(it, lr_max, lr_min, warmup, cycle)
        assert run_get_lr_cosine_schedule(it, lr_max, lr_min, warmup, cycle) == pytest.approx(
            expected, abs=1e-12
        )

    # The boundaries, spelled out.
    def lr(it):
        return get_lr_cosine_schedule(it, lr_max, lr_min, warmup, cycle)

    assert lr(0) == (lr_max if warmup == 0 else 0.0)
    if warmup > 0:
        assert lr(warmup - 1) == pytest.approx(lr_max * (warmup - 1) / warmup)
    assert lr(warmup) == (lr_min if warmup == cycle else lr_max)
    if (cycle - warmup) % 2 == 0 and cycle > warmup:
        assert lr((warmup + cycle) // 2) == pytest.approx((lr_max + lr_min) / 2)
    assert (
        lr(cycle) == pytest.approx(lr_min) and lr(cycle + 1) == lr_min and lr(10 * cycle) == lr_min
    )


def test_get_lr_cosine_schedule_handout_values():
    # Values of the handout's schedule (max 1, min 0.1, warmup 7, cycle 21), rounded.
    values = [get_lr_cosine_schedule(it, 1.0, 0.1, 7, 21) for it in range(25)]
    assert values[:8] == pytest.approx([0, 1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 1.0])
    assert values[14] == pytest.approx(0.55)
    assert values[21:] == pytest.approx([0.1] * 4)
    assert all(a >= b for a, b in itertools.pairwise(values[7:]))


@pytest.mark.parametrize(
    "args", [(-1, 1.0, 0.1, 5, 10), (0, 1.0, 0.1, -1, 10), (0, 1.0, 0.1, 10, 5)]
)
def test_get_lr_cosine_schedule_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        get_lr_cosine_schedule(*args)


def test_sgd_decays_as_the_handout_says():
    start = torch.tensor([3.0, -2.0])
    w = torch.nn.Parameter(start.clone())
    opt = SGD([w], lr=0.5)
    expected = start.clone()
    for t in range(6):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
        expected = expected - 0.5 / math.sqrt(t + 1) * (2 * expected)
        torch.testing.assert_close(w.detach(), expected)
    assert opt.state[w]["t"] == 6
