import io
import math

import pytest
import torch

from cs336_basics.checkpoint import load_checkpoint, save_checkpoint
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.nn.layers import Embedding, RMSNorm
from cs336_basics.nn.transformer import TransformerLM
from cs336_basics.optim import Muon, group_parameters
from cs336_basics.optim.muon import newton_schulz

# Band that 5 quintic Newton-Schulz steps put a singular value in once it is not tiny: the
# iteration's fixed band is about [0.68, 1.14]; bf16 rounding widens it a little.
BAND = (0.6, 1.25)


def _in_band(values: torch.Tensor) -> bool:
    return bool(((values > BAND[0]) & (values < BAND[1])).all())


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (600, 256), (3, 40, 24)])
def test_newton_schulz_gives_singular_values_near_one_for_tall_and_wide(shape):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    orth = newton_schulz(G, steps=5)
    assert orth.shape == G.shape and orth.dtype == torch.bfloat16
    singular_values = torch.linalg.svdvals(orth.double())
    assert _in_band(singular_values), singular_values.aminmax()


@pytest.mark.parametrize("n", [64, 256])
def test_newton_schulz_keeps_singular_vectors_of_square_matrices(n):
    # A random square matrix has singular values near 0 that 5 steps cannot lift (each step
    # multiplies a tiny one by 3.4445); all the others must land in the band, on the input's
    # own singular vectors: U^T O V is diagonal, with the band on its diagonal.
    G = torch.randn(n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(G)
    orth = newton_schulz(G).double()
    M = U.T @ orth @ Vh.T
    diagonal = M.diagonal()
    assert _in_band(diagonal[S / torch.linalg.matrix_norm(G) > 5e-3])
    assert (diagonal > -0.01).all()  # the polynomial keeps small singular values positive
    assert (M - torch.diag(diagonal)).abs().max() < 0.05
    assert torch.linalg.svdvals(orth).max() < BAND[1]


def test_newton_schulz_maps_zero_to_zero():
    assert torch.equal(
        newton_schulz(torch.zeros(2, 5, 3)), torch.zeros(2, 5, 3, dtype=torch.bfloat16)
    )


# ---------------------------------------------------------------- the step vs a reference

NS_A, NS_B, NS_C = 3.4445, -4.7750, 2.0315


def _reference_orthogonalize(u: torch.Tensor, steps: int) -> torch.Tensor:
    """The quintic iteration on one matrix, in bf16 after a float32 Frobenius normalization."""
    transposed = u.shape[0] > u.shape[1]
    X = (u.T if transposed else u) / (u.norm() + 1e-7)
    X = X.to(torch.bfloat16)
    for _ in range(steps):
        A = X @ X.T
        X = NS_A * X + (NS_B * A + NS_C * (A @ A)) @ X
    X = X.float()
    return X.T if transposed else X


def _reference_muon_step(weights, buffers, lr, momentum, nesterov, weight_decay, ns_steps):
    """Muon as a plain loop: momentum, Nesterov, Newton-Schulz, shape scale, decay, update."""
    for W, buf in zip(weights, buffers):
        if W.grad is None:
            continue
        g = W.grad
        buf.copy_(momentum * buf + (1 - momentum) * g)
        u = (1 - momentum) * g + momentum * buf if nesterov else buf
        rows, cols = W.shape
        # Scale so that the update's RMS is 0.2: an orthogonal rows x cols matrix has RMS
        # entry 1/sqrt(max(rows, cols)).
        scale = 0.2 * math.sqrt(max(rows, cols))
        update = _reference_orthogonalize(u, ns_steps)
        with torch.no_grad():
            W.copy_(W * (1 - lr * weight_decay) - lr * scale * update)


def _params(seed: int) -> dict[str, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "tall": (24, 8),
        "wide": (8, 24),
        "square": (16, 16),
        "square2": (16, 16),  # batched with "square"
        "no_grad": (16, 16),
        "table": (30, 16),
        "gain": (16,),
    }
    return {name: torch.nn.Parameter(torch.randn(s, generator=gen)) for name, s in shapes.items()}


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_step_equals_a_plain_reference(nesterov):
    muon_hyper = {"lr": 0.02, "momentum": 0.9, "nesterov": nesterov, "ns_steps": 5}
    adam_hyper = {"lr": 1e-2, "betas": (0.8, 0.95), "eps": 1e-8, "weight_decay": 0.05}
    matrix_names = ["tall", "wide", "square", "square2", "no_grad"]
    ours, ref = _params(0), _params(0)
    opt = Muon(
        [
            {"params": [ours[n] for n in matrix_names], "use_muon": True, "weight_decay": 0.3}
            | muon_hyper,
            {"params": [ours["table"], ours["gain"]], "use_muon": False} | adam_hyper,
        ]
    )
    ref_adam = torch.optim.AdamW([ref["table"], ref["gain"]], **adam_hyper)
    ref_buffers = [torch.zeros_like(ref[n]) for n in matrix_names]
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        for name in ours:
            if name != "no_grad":
                ours[name].grad = torch.randn(ours[name].shape, generator=gen)
                ref[name].grad = ours[name].grad.clone()
        opt.step()
        _reference_muon_step(
            [ref[n] for n in matrix_names], ref_buffers, weight_decay=0.3, **muon_hyper
        )
        ref_adam.step()
        for name in ours:
            # Equal here; the tolerance (1/4 of an update's RMS, lr * 0.2) leaves room for a
            # bf16 rounding that another BLAS makes differently (~10% of an entry's update).
            torch.testing.assert_close(ours[name], ref[name], rtol=0, atol=1e-3)
    for name, buf in zip(matrix_names, ref_buffers):
        if name != "no_grad":
            torch.testing.assert_close(opt.state[ours[name]]["momentum_buffer"], buf)
    assert torch.equal(ours["no_grad"], _params(0)["no_grad"]) and ours["no_grad"] not in opt.state
    # The tolerance is far below what the steps changed.
    assert (ours["square"] - _params(0)["square"]).abs().mean() > 20 * 1e-3


def test_muon_step_makes_no_host_sync():
    # On the meta device every value is unknown: a step that read one on the host (.item(),
    # a branch on a tensor) would raise here.
    def param(*shape):
        p = torch.nn.Parameter(torch.empty(shape, device="meta"))
        p.grad = torch.empty_like(p)
        return p

    opt = Muon(
        [
            {"params": [param(8, 4), param(8, 4), param(3, 5)], "use_muon": True},
            {"params": [param(5)], "use_muon": False},
        ]
    )
    opt.step()
    opt.step()
    assert len(opt.state) == 4


# ---------------------------------------------------------------- with a model


def _model(seed: int, **options) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(
        vocab_size=50, context_length=8, d_model=16, num_layers=2, num_heads=2, d_ff=24,
        rope_theta=10000.0, **options,
    )  # fmt: skip


def _optimizer(model: torch.nn.Module) -> Muon:
    groups = group_parameters(model)
    return Muon(
        [
            # A key of the caller's own (here the trainer's lr multiplier) is kept as it is.
            {"params": groups["matrices"], "use_muon": True, "lr": 0.01, "lr_scale": 2.0},
            {
                "params": groups["embeddings"] + groups["head"],
                "use_muon": False,
                "lr": 0.01,
                "betas": (0.9, 0.95),
                "weight_decay": 0.1,
            },
            {"params": groups["scalars"], "use_muon": False, "lr": 0.01, "weight_decay": 0.0},
        ]
    )


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        gen = torch.Generator().manual_seed(step)
        ids = torch.randint(0, 50, (4, 9), generator=gen)
        opt.zero_grad()
        cross_entropy(model(ids[:, :-1]), ids[:, 1:]).backward()
        opt.step()


@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_muon_exact_resume(tie_embeddings):
    model, other_model = (
        _model(0, tie_embeddings=tie_embeddings),
        _model(1, tie_embeddings=tie_embeddings),
    )
    opt, other_opt = _optimizer(model), _optimizer(other_model)
    _train(model, opt, range(3))
    checkpoint = io.BytesIO()
    save_checkpoint(model, opt, 3, checkpoint)
    _train(model, opt, range(3, 6))

    checkpoint.seek(0)
    assert load_checkpoint(checkpoint, other_model, other_opt) == 3
    assert other_opt.param_groups[0]["use_muon"] and not other_opt.param_groups[1]["use_muon"]
    assert other_opt.param_groups[0]["lr_scale"] == 2.0
    _train(other_model, other_opt, range(3, 6))
    for (name, p), q in zip(model.named_parameters(), other_model.parameters()):
        assert torch.equal(p, q), name
        for key, value in opt.state[p].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other_opt.state[q][key]))
    assert "momentum_buffer" in opt.state[model.layers[0].attn.q_proj.weight]
    assert "exp_avg_sq" in opt.state[model.token_embeddings.weight]


def test_muon_trains_a_small_model():
    model = _model(0)
    opt = _optimizer(model)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (8, 9), generator=gen)

    def loss():
        return cross_entropy(model(ids[:, :-1]), ids[:, 1:])

    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.5 * first


def _names(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [by_id[id(p)] for p in params]


def test_group_parameters_untied():
    model = _model(0)
    groups = group_parameters(model)
    names = {key: _names(model, params) for key, params in groups.items()}
    assert names["embeddings"] == ["token_embeddings.weight"]
    assert names["head"] == ["lm_head.weight"]
    assert names["scalars"] == [
        "layers.0.ln1.weight", "layers.0.ln2.weight", "layers.1.ln1.weight",
        "layers.1.ln2.weight", "ln_final.weight",
    ]  # fmt: skip
    assert len(names["matrices"]) == 2 * 7
    assert all(
        n.startswith("layers.")
        and n.endswith(("proj.weight", ".w1.weight", ".w2.weight", ".w3.weight"))
        for n in names["matrices"]
    )
    assert sorted(sum(names.values(), [])) == sorted(n for n, _ in model.named_parameters())


def test_group_parameters_tied_head_counts_once_as_embedding():
    model = _model(0, tie_embeddings=True)
    groups = group_parameters(model)
    assert groups["head"] == [] and groups["embeddings"] == [model.lm_head.weight]
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    # Whichever module registered the shared weight first, it is an embedding.
    model.lm_head.weight = torch.nn.Parameter(torch.zeros(50, 16))
    model.token_embeddings.weight = model.lm_head.weight
    assert group_parameters(model)["embeddings"] == [model.lm_head.weight]


def test_group_parameters_other_parameters_and_wrappers():
    model = _model(0)
    model.value_embeddings = torch.nn.ModuleList([Embedding(50, 16), Embedding(50, 16)])
    model.layers[0].attn.q_norm = RMSNorm(8)
    model.layers[1].ffn.w2.weight.requires_grad_(False)  # frozen: in no group
    groups = group_parameters(torch.compile(model))  # names under "_orig_mod."
    assert groups["embeddings"] == [
        model.token_embeddings.weight, model.value_embeddings[0].weight,
        model.value_embeddings[1].weight,
    ]  # fmt: skip
    assert model.layers[0].attn.q_norm.weight in groups["scalars"]
    assert len(groups["matrices"]) == 2 * 7 - 1

    model.projector = torch.nn.Parameter(torch.zeros(4, 16))
    with pytest.raises(ValueError, match="projector"):
        group_parameters(model)


@pytest.mark.parametrize(
    "groups, match",
    [
        ([{"params": [torch.zeros(2, 2)]}], "use_muon"),
        ([{"params": [torch.zeros(3)], "use_muon": True}], "2-D"),
        ([{"params": [torch.zeros(2, 2)], "use_muon": True, "betas": (0.9, 0.9)}], "betas"),
        ([{"params": [torch.zeros(2)], "use_muon": False, "momentum": 0.9}], "momentum"),
        ([{"params": [torch.zeros(2, 2)], "use_muon": True, "momentum": 1.0}], "momentum"),
        ([{"params": [torch.zeros(2, 2)], "use_muon": True, "ns_steps": 0}], "ns_steps"),
        ([{"params": [torch.zeros(2, 2)], "use_muon": True, "lr": -1.0}], "lr"),
        ([{"params": [torch.zeros(2)], "use_muon": False, "betas": (0.9, 1.0)}], "betas"),
    ],
)
def test_muon_rejects_bad_groups(groups, match):
    with pytest.raises(ValueError, match=match):
        Muon(groups)


def test_muon_rejects_a_plain_parameter_list():
    with pytest.raises(ValueError, match="use_muon"):
        Muon(_model(0).parameters())
