"""RoPE vs NoPE: the same model with rotary position embeddings (the baseline) or with no
position information at all (causal attention alone). Writes runs/<name>/<name>.png and .md.

  uv run python script/no_pos_emb.py --budget-minutes 8
"""

from cs336_basics.training.sweep import (
    base_config,
    parse_sweep_args,
    run_sweep_from_args,
    sweep_parser,
)


def main() -> None:
    parser = sweep_parser(__doc__, "no_pos_emb")
    args = parse_sweep_args(parser)
    base = base_config(parser, args, 2)
    runs = {"RoPE": {"model.positions": "rope"}, "NoPE": {"model.positions": "nope"}}
    run_sweep_from_args(args, base, runs, "RoPE vs no position embedding")


if __name__ == "__main__":
    main()
