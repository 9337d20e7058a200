"""The runs of the recipe ladder (script/recipe_ladder.py): the handout baseline, then the
leaderboard techniques added one at a time up to the full recipe.

Runs are dicts of dotted config overrides; `recipe` is the recipe preset flattened to dotted
keys (`flat_preset`), `baseline_lrs` the baseline's rates under the keys of LEARNING_RATES.
"""

from cs336_basics.config import read_preset

# Each technique, in the ladder's order, and the recipe settings that make it.
TECHNIQUES = [
    ("bf16", ["training.autocast"]),  # first: every later rung then runs at the recipe's speed
    ("Muon", ["optim.name", "optim.muon_lr", "optim.momentum"]),
    ("QK-norm", ["model.qk_norm"]),
    ("ReLU^2", ["model.ffn", "model.d_ff"]),
    ("zero-init", ["model.zero_init_out"]),
    ("embeddings", ["model.value_embeddings", "optim.embed_lr", "optim.head_lr"]),
    ("WSD", ["schedule.name", "schedule.decay_fraction"]),
    ("soft-cap", ["model.logit_softcap"]),
]
LEARNING_RATES = ["optim.lr", "optim.min_lr", "optim.muon_lr", "optim.embed_lr", "optim.head_lr"]


def flat_preset(path: str) -> dict[str, object]:
    """A TOML preset as dotted keys: {"optim.lr": 4e-3, ...}."""
    return {f"{s}.{k}": v for s, values in read_preset(path).items() for k, v in values.items()}


def scaled_rates(baseline_lrs: dict, recipe: dict, factor: float) -> dict[str, float]:
    """The recipe's learning rates (the baseline's where the recipe sets none) times factor."""
    rates = baseline_lrs | {k: recipe[k] for k in LEARNING_RATES if k in recipe}
    return {k: v * factor for k, v in rates.items() if v is not None}


def lr_sweep(baseline_lrs: dict, recipe: dict, factors: list[float]) -> dict[str, dict]:
    """Both ends of the ladder at each factor times their own rates: "baseline, lr xF" and
    "recipe, lr xF" (every technique on)."""
    settings = {k: recipe[k] for _, keys in TECHNIQUES for k in keys if k in recipe}
    runs = {
        f"baseline, lr x{f:g}": {k: v * f for k, v in baseline_lrs.items() if v is not None}
        for f in factors
    }
    return runs | {
        f"recipe, lr x{f:g}": settings | scaled_rates(baseline_lrs, recipe, f) for f in factors
    }


def rungs(baseline_lrs: dict, recipe: dict, factor: float) -> dict[str, dict]:
    """The rungs after the baseline: "+ <technique>", each the one before with one more
    technique, all at the recipe's rates times `factor` (its sweep's best). lr and min_lr hold
    from the first rung, a technique's own rate (muon_lr, embed_lr) from the rung that adds
    it; the last rung, "+ soft-cap = full recipe (lr xF)", is `lr_sweep`'s "recipe, lr xF"."""
    rates = scaled_rates(baseline_lrs, recipe, factor)
    added = {k: rates[k] for k in ("optim.lr", "optim.min_lr")}
    runs = {}
    for i, (name, keys) in enumerate(TECHNIQUES):
        added |= {k: rates.get(k, recipe[k]) for k in keys if k in recipe}
        last = i == len(TECHNIQUES) - 1
        runs[f"+ {name}" + (f" = full recipe (lr x{factor:g})" if last else "")] = dict(added)
    return runs
