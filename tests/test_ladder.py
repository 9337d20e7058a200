"""The recipe ladder's runs: each rung adds exactly one technique at the recipe's tuned rates,
and the last rung is the recipe run of the learning-rate sweep (so it is trained once)."""

from pathlib import Path

import pytest

from cs336_basics.config import load_config, with_overrides
from cs336_basics.training.ladder import (
    LEARNING_RATES,
    TECHNIQUES,
    flat_preset,
    lr_sweep,
    rungs,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def ends():
    base = load_config(CONFIGS / "tinystories_cpu.toml")
    baseline_lrs = {k: getattr(base.optim, k.split(".")[1]) for k in LEARNING_RATES}
    return base, baseline_lrs, flat_preset(CONFIGS / "tinystories_recipe.toml")


def test_each_rung_adds_one_technique_at_the_recipes_rates(ends):
    base, baseline_lrs, recipe = ends
    factor = 0.5
    ladder = rungs(baseline_lrs, recipe, factor)
    assert len(ladder) == len(TECHNIQUES)
    before: dict = {}
    for (label, overrides), (name, keys) in zip(ladder.items(), TECHNIQUES):
        assert label.startswith(f"+ {name}")
        new = overrides.keys() - before.keys()
        assert new - {"optim.lr", "optim.min_lr"} == {k for k in keys if k in recipe}
        assert {k: overrides[k] for k in before} == before  # nothing earlier changes
        for k in LEARNING_RATES:
            if k in overrides:
                assert overrides[k] == pytest.approx(recipe[k] * factor), (label, k)
        with_overrides(base, overrides)  # a valid config
        before = overrides
    first = next(iter(ladder.values()))
    assert "optim.muon_lr" not in first and "optim.embed_lr" not in first
    assert ladder["+ Muon"]["optim.muon_lr"] == pytest.approx(recipe["optim.muon_lr"] * factor)


def test_the_last_rung_is_the_sweeps_recipe_run(ends):
    _, baseline_lrs, recipe = ends
    sweep = lr_sweep(baseline_lrs, recipe, [0.5, 1.0, 2.0])
    assert list(sweep) == [f"{end}, lr x{f}" for end in ("baseline", "recipe") for f in (0.5, 1, 2)]
    assert sweep["baseline, lr x2"]["optim.lr"] == pytest.approx(2 * baseline_lrs["optim.lr"])
    last_label, last = list(rungs(baseline_lrs, recipe, 2.0).items())[-1]
    assert last_label == "+ soft-cap = full recipe (lr x2)"
    assert last == sweep["recipe, lr x2"]
