"""Config loading: presets, dotted overrides, type checks, clear errors, round trips."""

import argparse
import dataclasses
from pathlib import Path

import pytest

from cs336_basics.config import (
    SECTIONS,
    TrainConfig,
    add_config_arguments,
    config_from_dict,
    config_to_dict,
    load_config,
    overrides_from_args,
    to_toml,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_presets_load(path):
    cfg = load_config(path)
    assert cfg.total_steps > 0 and cfg.training.run_name == path.stem


def test_recipe_preset_is_the_cpu_preset_with_the_recipe_on():
    base = load_config(CONFIGS / "tinystories_cpu.toml")
    recipe = load_config(CONFIGS / "tinystories_recipe.toml")
    assert recipe.data == base.data
    size = ("vocab_size", "context_length", "d_model", "num_layers", "num_heads")
    assert [getattr(recipe.model, k) for k in size] == [getattr(base.model, k) for k in size]
    # about as many feed-forward weights: ReLU^2's two matrices against SwiGLU's three
    assert abs(2 * recipe.model.d_ff - 3 * base.model.d_ff) <= 0.02 * 3 * base.model.d_ff
    assert recipe.training.total_tokens == base.training.total_tokens
    assert (recipe.optim.name, recipe.schedule.name, recipe.model.ffn) == ("muon", "wsd", "relu2")
    assert recipe.model.qk_norm and recipe.model.zero_init_out and recipe.model.logit_softcap


def test_tinystories_preset_is_the_handouts_model():
    cfg = load_config(CONFIGS / "tinystories.toml")
    m = cfg.model
    assert (
        m.vocab_size,
        m.context_length,
        m.d_model,
        m.num_layers,
        m.num_heads,
        m.d_ff,
        m.rope_theta,
    ) == (10000, 256, 512, 4, 16, 1344, 10000.0)
    assert cfg.tokens_per_step * cfg.total_steps == 327_680_000 == cfg.training.total_tokens
    assert load_config(CONFIGS / "tinystories_cpu.toml").training.total_tokens == 40_000_000
    assert load_config(CONFIGS / "owt.toml").model.vocab_size == 32000


def test_override_forms_and_types():
    cfg = load_config(
        CONFIGS / "demo.toml",
        [
            "--model.d_model",
            "64",
            "optim.lr=2e-3",
            "--optim.betas=0.8,0.9",
            "--training.total_tokens",
            "1_000_000",
            "--training.max_steps",
            "none",
            "--training.compile",
            "true",
            "--data.special_tokens",
            "<a>,<b>",
            "--training.time_budget_s",
            "30",
        ],
    )
    assert cfg.model.d_model == 64 and cfg.optim.lr == 2e-3 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.training.max_steps is None and cfg.training.compile is True
    assert cfg.data.special_tokens == ["<a>", "<b>"] and cfg.training.time_budget_s == 30.0
    assert cfg.total_steps == -(-1_000_000 // cfg.tokens_per_step)  # rounded up to whole steps
    assert load_config(None, {"model.d_model": 64, "training.max_steps": 5}).model.d_model == 64


def test_max_steps_wins_over_total_tokens():
    cfg = load_config(CONFIGS / "tinystories.toml", {"training.max_steps": 7})
    assert cfg.total_steps == 7


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.d_modle": 1}, "unknown config key model.d_modle"),
        ({"modle.d_model": 1}, "unknown config key 'modle.d_model'"),
        ({"training.batch_size": "many"}, "training.batch_size must be an integer"),
        ({"training.batch_size": 0}, "training.batch_size must be positive"),
        ({"training.compile": "maybe"}, "training.compile must be true or false"),
        ({"training.device": "tpu"}, "training.device must be one of"),
        ({"model.norm": "middle"}, "norm"),
        ({"model.num_heads": 5}, "[model] section"),
        ({"optim.lr": -1}, "optim.lr must be a finite number >= 0"),
        ({"optim.min_lr": 1.0}, "optim.min_lr (1.0) must not exceed optim.lr"),
        ({"optim.betas": "0.9,1.5"}, "optim.betas must lie in [0, 1)"),
        ({"optim.betas": "0.9"}, "optim.betas must have 2 items"),
        (
            {"training.max_steps": "none", "training.total_tokens": "none"},
            "set training.max_steps or training.total_tokens",
        ),
        ({"training.run_name": "a/b"}, "training.run_name must be a plain folder name"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ValueError) as e:
        load_config(CONFIGS / "demo.toml", overrides)
    assert message in str(e.value)


def test_bad_preset_files(tmp_path):
    cases = {
        "[modle]\nd_model = 1\n": "unknown section [modle]",
        "[model]\nd_model = \n": "not valid TOML",
        "[model]\nd_model = 64.5\n": "model.d_model must be an integer",
        "[training]\nmax_steps = true\n": "training.max_steps",
    }
    for text, message in cases.items():
        path = tmp_path / "p.toml"
        path.write_text(text)
        with pytest.raises(ValueError) as e:
            load_config(path)
        assert message in str(e.value), text
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="has no value"):
        load_config(CONFIGS / "demo.toml", ["--optim.lr"])


def test_round_trips(tmp_path):
    cfg = load_config(
        CONFIGS / "tinystories.toml", {"training.time_budget_s": 60, "model.tie_embeddings": True}
    )
    assert config_from_dict(config_to_dict(cfg)) == cfg
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_every_field_is_a_command_line_option():
    defaults = load_config(CONFIGS / "demo.toml")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, defaults)
    help_text = parser.format_help()
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"--{section}.{f.name}" in help_text
    args = parser.parse_args(["--model.d_model", "32", "--optim.lr", "1e-2"])
    assert overrides_from_args(args) == {"model.d_model": "32", "optim.lr": "1e-2"}
    assert load_config(CONFIGS / "demo.toml", overrides_from_args(args)).model.d_model == 32
    assert isinstance(defaults, TrainConfig)
