"""Layer-norm ablation: the pre-norm baseline against the same model with every RMSNorm removed,
at the base learning rate and at a lower one (the handout asks whether a lower rate restores
stability). Writes runs/<name>/<name>.png and .md (--pics pics: into pics/).

  uv run python script/layer_norm_ablation.py --budget-minutes 10
"""

from cs336_basics.training.sweep import (
    base_config,
    parse_sweep_args,
    run_sweep_from_args,
    sweep_parser,
)


def main() -> None:
    parser = sweep_parser(__doc__, "layer_norm_ablation")
    parser.add_argument(
        "--lower-lr",
        type=float,
        help="learning rate of the second no-norm run (default: the base optim.lr / 10)",
    )
    args = parse_sweep_args(parser)
    base = base_config(parser, args, 3)
    lr, floor = base.optim.lr, base.optim.min_lr / base.optim.lr
    lower = args.lower_lr or lr / 10
    runs = {
        f"pre-norm, lr={lr:g}": {"model.norm": "pre"},
        f"no norm, lr={lr:g}": {"model.norm": "none"},
        f"no norm, lr={lower:g}": {
            "model.norm": "none",
            "optim.lr": lower,
            "optim.min_lr": lower * floor,
        },
    }
    run_sweep_from_args(args, base, runs, "RMSNorm removed")


if __name__ == "__main__":
    main()
