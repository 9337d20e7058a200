"""The recipe ladder: the handout baseline, then the leaderboard techniques added one at a
time up to the full recipe, every run at the same wall-clock budget.

    baseline (AdamW, cosine, fp32) -> + bf16 autocast -> + Muon -> + QK-norm -> + ReLU^2
    -> + zero-init -> + embeddings (value embeddings, own learning rate) -> + WSD
    -> + soft-cap = full recipe

The baseline is --base (configs/tinystories_cpu.toml); each technique takes its settings
from --recipe (configs/tinystories_recipe.toml, which is the base with all of them on).
First the baseline and the full recipe each get a small learning-rate sweep (every lr of the
preset times each --lr-factors value); the rungs between then use the recipe's best. Runs
are chosen and compared by their loss on the whole validation set, measured after the
budget. Writes runs/<name>/<name>.png and .md (--pics pics: into pics/, for the README).

  uv run python script/recipe_ladder.py --budget-per-run 10 --jobs 2 --pics pics \\
      --data.train_text data/ts/train.txt --data.val_text data/ts/valid.txt ...
"""

from cs336_basics.config import load_config, with_overrides
from cs336_basics.training.ladder import LEARNING_RATES, flat_preset, lr_sweep, rungs
from cs336_basics.training.sweep import parse_sweep_args, run_sweep, sweep_parser


def _best(outcomes, prefix: str):
    measured = [o for o in outcomes if o.label.startswith(prefix) and o.status == "ok"]
    if not measured:
        raise SystemExit(f"error: no {prefix} run of the learning-rate sweep finished")
    return min(measured, key=lambda o: o.result.full_val_loss)


def main() -> None:
    parser = sweep_parser(__doc__, "recipe_ladder")
    parser.set_defaults(config="configs/tinystories_cpu.toml", jobs=2)
    parser.add_argument(
        "--recipe",
        default="configs/tinystories_recipe.toml",
        help="preset with every technique on (default: %(default)s)",
    )
    parser.add_argument(
        "--budget-per-run",
        type=float,
        default=10.0,
        metavar="MINUTES",
        help="wall-clock training budget of every run (default: %(default)s)",
    )
    parser.add_argument(
        "--lr-factors",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 2.0],
        help="the learning-rate sweeps: each preset's rates times these (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-interval", type=int, default=25, help="steps between estimates (default: 25)"
    )
    args = parse_sweep_args(parser)
    if args.steps is not None or args.budget_minutes is not None:
        parser.error("the ladder runs on a wall-clock budget: use --budget-per-run")
    try:
        base = load_config(args.config, args.overrides)
        base = with_overrides(base, {
            "training.max_steps": 10**9, "training.total_tokens": None,
            "training.time_budget_s": args.budget_per_run * 60,
            "training.eval_interval": args.eval_interval,
            "training.log_interval": max(1, args.eval_interval // 5),
            "training.checkpoint_interval": 10**9, "training.keep_last": 1,
            "schedule.cosine_cycle_iters": None,
        })  # fmt: skip
        recipe = flat_preset(args.recipe)
    except ValueError as e:
        parser.error(str(e))
    baseline_lrs = {k: getattr(base.optim, k.split(".")[1]) for k in LEARNING_RATES}
    outcomes = run_sweep(base, lr_sweep(baseline_lrs, recipe, args.lr_factors), f"{args.name}_lr",
                         title="learning rates of the ladder's ends", progress=not args.quiet,
                         reuse=args.reuse_runs, jobs=args.jobs)  # fmt: skip
    baseline, full = _best(outcomes, "baseline"), _best(outcomes, "recipe")
    print(f"best: {baseline.label} and {full.label}")

    ladder = {f"baseline (AdamW, cosine; {baseline.label.split(', ')[1]})": baseline.overrides}
    ladder |= rungs(baseline_lrs, recipe, float(full.label.split("x")[-1]))
    run_sweep(base, ladder, args.name, args.pics, "the recipe ladder, at equal wall-clock budget",
              progress=not args.quiet, reuse=True, jobs=args.jobs)  # fmt: skip


if __name__ == "__main__":
    main()
