"""Pre-norm vs post-norm: the same model with RMSNorm before each sublayer (the baseline) or
after each residual addition, as in the original Transformer. Writes runs/<name>/<name>.png and .md.

  uv run python script/pre_norm_ablation.py --budget-minutes 8
"""

from cs336_basics.training.sweep import (
    base_config,
    parse_sweep_args,
    run_sweep_from_args,
    sweep_parser,
)


def main() -> None:
    parser = sweep_parser(__doc__, "pre_norm_ablation")
    args = parse_sweep_args(parser)
    base = base_config(parser, args, 2)
    runs = {"pre-norm": {"model.norm": "pre"}, "post-norm": {"model.norm": "post"}}
    run_sweep_from_args(args, base, runs, "pre-norm vs post-norm")


if __name__ == "__main__":
    main()
