"""SwiGLU vs SiLU: the baseline's gated SwiGLU feed-forward net against a plain SiLU net,
W2 SiLU(W1 x), with d_ff = 4 d_model, so that both have about the same parameters when the
baseline's d_ff is about 8/3 d_model. Writes runs/<name>/<name>.png and .md.

  uv run python script/swiglu_ablation.py --budget-minutes 8
"""

from cs336_basics.training.sweep import (
    base_config,
    parse_sweep_args,
    run_sweep_from_args,
    sweep_parser,
)


def main() -> None:
    parser = sweep_parser(__doc__, "swiglu_ablation")
    args = parse_sweep_args(parser)
    base = base_config(parser, args, 2)
    d_model, d_ff = base.model.d_model, base.model.d_ff
    runs = {
        f"SwiGLU, d_ff={d_ff}": {"model.ffn": "swiglu"},
        f"SiLU, d_ff={4 * d_model}": {"model.ffn": "silu", "model.d_ff": 4 * d_model},
    }
    run_sweep_from_args(args, base, runs, "SwiGLU vs SiLU feed-forward")


if __name__ == "__main__":
    main()
