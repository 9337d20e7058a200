"""Learning-rate sweep: the same model trained at each peak learning rate, divergent ones included.

The cosine schedule's floor keeps the base min_lr/lr ratio at every learning rate.
Writes runs/<name>/<name>.png (validation loss vs steps and vs wall-clock) and .md beside its
runs (--pics pics: into pics/, for the README).

  uv run python script/learning_rate_experiment.py --budget-minutes 15
"""

from cs336_basics.training.sweep import (
    base_config,
    parse_sweep_args,
    run_sweep_from_args,
    sweep_parser,
)


def main() -> None:
    parser = sweep_parser(__doc__, "learning_rate")
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
        help="peak learning rates to train at (default: %(default)s)",
    )
    args = parse_sweep_args(parser)
    base = base_config(parser, args, len(args.lrs))
    # min_lr scaled from the base's exactly, so the run at the base lr is the base run
    runs = {
        f"lr={lr:g}": {"optim.lr": lr, "optim.min_lr": base.optim.min_lr * (lr / base.optim.lr)}
        for lr in args.lrs
    }
    outcomes = run_sweep_from_args(args, base, runs, "learning-rate sweep")
    finished = [o for o in outcomes if o.status == "ok"]
    if finished:
        best = min(finished, key=lambda o: o.result.final_val_loss)
        print(f"best: {best.label} (final validation loss {best.result.final_val_loss:.4f})")


if __name__ == "__main__":
    main()
