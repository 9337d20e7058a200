"""Resource accounting against independent counts: built models, torch's FLOP counter, hand formulas."""

import re
import runpy
import sys
from collections import Counter

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cs336_basics import accounting as acc
from cs336_basics.nn.transformer import ModelConfig, TransformerLM

TINY = {
    "vocab_size": 97,
    "context_length": 16,
    "d_model": 32,
    "num_layers": 2,
    "num_heads": 4,
    "d_ff": 48,
    "rope_theta": 10000.0,
}
VARIANTS = [
    {},
    {"ffn": "silu"},
    {"norm": "none"},
    {"norm": "post", "positions": "nope"},
    {"tie_embeddings": True},
    {"ffn": "silu", "norm": "none", "tie_embeddings": True},
    {"ffn": "relu2"},
    {"qk_norm": True},
    {"value_embeddings": 1},
    {"logit_softcap": 30.0, "zero_init_out": True},
    {"attention": "sdpa"},
    {"qk_norm": True, "ffn": "relu2", "value_embeddings": 2, "logit_softcap": 30.0,
     "zero_init_out": True, "tie_embeddings": True},
]  # fmt: skip


def tiny(**variant) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(**TINY, **variant)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_parameter_count_matches_built_model(variant):
    model = tiny(**variant)
    counts = acc.parameter_count(model.config)
    assert counts.total == sum(p.numel() for p in model.parameters())  # a tied weight appears once
    by_component = Counter()
    for name, p in model.named_parameters():
        name = re.sub(r"^layers\.\d+\.", "", name)
        name = re.sub(r"^value_embeddings\.\d+", "value_embeddings", name)
        by_component[name.removesuffix(".weight")] += p.numel()
    assert counts.components() == dict(by_component)


def test_parameter_count_of_switches_by_hand():
    base = acc.parameter_count(ModelConfig(**TINY)).total
    V, L, d, d_k, d_ff = 97, 2, 32, 8, 48

    def count(**variant):
        return acc.parameter_count(ModelConfig(**TINY, **variant)).total - base

    assert count(qk_norm=True) == L * 2 * d_k
    assert count(value_embeddings=2) == 2 * (V * d + 1)
    assert count(ffn="relu2") == count(ffn="silu") == -L * d * d_ff  # no w3
    assert count(logit_softcap=30.0, zero_init_out=True, attention="sdpa") == 0


def test_gpt2_xl_parameter_count():
    V, L, d, d_ff = 50_257, 48, 1_600, 6_400
    embedding_and_head = 2 * V * d
    per_block = 4 * d * d + 3 * d * d_ff + 2 * d  # q, k, v, o; w1, w2, w3; two RMSNorm gains
    expected = embedding_and_head + L * per_block + d  # + final RMSNorm
    cfg = acc.gpt2_config("xl")
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.vocab_size) == (
        L,
        d,
        25,
        d_ff,
        V,
    )
    assert acc.parameter_count(cfg).total == expected
    assert round(expected / 1e9, 2) == 2.13


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_forward_flops_match_flop_counter(variant):
    model, batch, seq = tiny(**variant), 3, 10  # seq shorter than the context on purpose
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randint(0, TINY["vocab_size"], (batch, seq)))
    flops = acc.forward_flops(model.config, batch, seq)
    assert flops.total == counter.get_total_flops()

    by_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    attention = sum(n for name, n in flops.per_layer.items() if name.startswith("attn."))
    assert by_module["TransformerLM.layers.0.attn"] == attention
    assert (
        by_module["TransformerLM.layers.1.attn.output_proj"] == flops.per_layer["attn.output_proj"]
    )
    for w in ("w1", "w2", "w3"):
        assert by_module.get(f"TransformerLM.layers.0.ffn.{w}", 0) == flops.per_layer.get(
            f"ffn.{w}", 0
        )
    assert by_module["TransformerLM.lm_head"] == flops.after["lm_head"]


def test_gpt2_xl_forward_flops_by_hand():
    V, T, L, d, d_ff = 50_257, 1_024, 48, 1_600, 6_400
    per_block = 4 * 2 * T * d * d + 2 * 2 * T * T * d + 3 * 2 * T * d * d_ff
    expected = L * per_block + 2 * T * d * V
    flops = acc.forward_flops(acc.gpt2_config("xl"))
    assert flops.total == expected == 4_513_336_524_800
    assert acc.forward_flops(acc.gpt2_config("xl"), batch_size=4, seq_len=2048).total == 4 * (
        L * (8 * 2048 * d * d + 4 * 2048 * 2048 * d + 6 * 2048 * d * d_ff) + 2 * 2048 * d * V
    )


def handout_activations(
    B, T, d, h, d_ff, V, L, ffn, norms, qk_norm=False, value_embeddings=0, softcap=False
):
    """Values saved for backward, written out from the handout's list for a pre-norm block,
    plus what the switches add."""
    rms = 2 * B * T * d if norms else 0
    attention = (
        3 * B * T * d + 2 * B * h * T * T + B * T * d + B * T * d
    )  # qkv, QK^T, softmax, AV, out
    attention += 2 * B * T * d if qk_norm else 0  # normed q and k
    if ffn in ("silu", "relu2"):
        mlp = B * T * d_ff + B * T * d_ff + B * T * d  # W1, activation, W2
    else:
        mlp = 4 * B * T * d_ff + B * T * d  # W1, W3, SiLU, gate, W2
    final = (B * T * d if norms else 0) + B * T * V + B * T * V  # final norm, logits, cross-entropy
    final += B * T * V if softcap else 0  # capped logits
    return L * (rms + attention + mlp) + final + value_embeddings * B * T * d


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"ffn": "silu"},
        {"norm": "none", "tie_embeddings": True},
        {"ffn": "relu2", "qk_norm": True, "value_embeddings": 2, "logit_softcap": 30.0},
    ],
    ids=str,
)
def test_adamw_memory_matches_formula(variant):
    cfg = ModelConfig(**TINY, **variant)
    B, T = 5, 12
    n_params = sum(p.numel() for p in tiny(**variant).parameters())

    def handout(seq: int) -> int:
        return handout_activations(
            B, seq, cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.vocab_size, cfg.num_layers,
            cfg.ffn, cfg.norm != "none", cfg.qk_norm, cfg.value_embeddings,
            cfg.logit_softcap is not None,
        )  # fmt: skip

    acts = handout(T)
    mem = acc.adamw_memory(cfg, B, T)
    assert (mem.parameters, mem.gradients, mem.optimizer_state) == (
        4 * n_params,
        4 * n_params,
        8 * n_params,
    )
    assert mem.activations == 4 * acts
    assert mem.total == 16 * n_params + 4 * acts
    assert acc.adamw_memory(cfg, B).activations == 4 * handout(cfg.context_length)


def test_max_batch_size_is_the_largest_that_fits():
    cfg = acc.gpt2_config("xl")
    budget = 80e9
    b = acc.max_batch_size(cfg, budget)
    assert b >= 1
    assert acc.adamw_memory(cfg, b).total <= budget < acc.adamw_memory(cfg, b + 1).total
    small = ModelConfig(**TINY)
    budget = acc.adamw_memory(small, 7).total
    assert acc.max_batch_size(small, budget) == 7
    assert acc.max_batch_size(small, budget - 1) == 6
    assert acc.max_batch_size(cfg, 1e9) == 0  # the weights alone do not fit


def test_training_flops_and_time():
    cfg = ModelConfig(**TINY)
    n_params = sum(p.numel() for p in tiny().parameters())
    forward = acc.forward_flops(cfg, 8).total
    assert acc.training_step_flops(cfg, 8) == 3 * forward + 14 * n_params
    seconds = acc.training_time_seconds(
        cfg, steps=1000, batch_size=8, peak_flops_per_second=1e12, mfu=0.25
    )
    assert seconds == pytest.approx(1000 * (3 * forward + 14 * n_params) / 0.25e12)
    with pytest.raises(ValueError, match="mfu"):
        acc.training_time_seconds(cfg, 1, 1, 1e12, mfu=50)
    with pytest.raises(ValueError, match="GPT-2 size"):
        acc.gpt2_config("huge")


def test_accounting_script(monkeypatch, capsys):
    argv = [
        "accounting.py",
        "--vocab-size",
        "97",
        "--context-length",
        "16",
        "--d-model",
        "32",
        "--num-layers",
        "2",
        "--num-heads",
        "4",
        "--d-ff",
        "48",
        "--batch-size",
        "3",
        "--steps",
        "10",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path("script/accounting.py", run_name="__main__")
    out = capsys.readouterr().out
    assert f"Parameters: {sum(p.numel() for p in tiny().parameters()):,}" in out
    assert "GPT-2 shapes" not in out  # a custom shape skips the GPT-2 tables
    assert "AdamW training memory" in out and "Largest batch" in out

    switches = ["--ffn", "relu2", "--qk-norm", "--value-embeddings", "1", "--logit-softcap", "30"]
    monkeypatch.setattr(sys, "argv", argv + switches)
    runpy.run_path("script/accounting.py", run_name="__main__")
    out = capsys.readouterr().out
    built = tiny(ffn="relu2", qk_norm=True, value_embeddings=1)  # d_ff 48 from argv
    assert f"Parameters: {sum(p.numel() for p in built.parameters()):,}" in out
    assert "| attn.q_norm |" in out and "| logit_softcap |" in out

    monkeypatch.setattr(sys, "argv", ["accounting.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path("script/accounting.py", run_name="__main__")
    assert exit_info.value.code == 0
    assert "--batch-size" in capsys.readouterr().out
