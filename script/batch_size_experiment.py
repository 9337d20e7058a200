"""Batch-size sweep: batch sizes from 1 up to a maximum, each run on the same number of tokens.

Sizes are powers of two from --min-batch-size to --max-batch-size; the series stops at the
first size that runs out of memory (reported in the table). Every run sees the base run's
token count, so a batch of b takes (base batch / b) times the base steps. With --retune-lr
the learning rate follows the square-root rule, lr(b) = lr * sqrt(b / base batch) (the usual
scaling for Adam-style optimizers), instead of a sweep per size, which would multiply the cost.

  uv run python script/batch_size_experiment.py --budget-minutes 20 --max-batch-size 128
"""

import math

from cs336_basics.config import short_run_overrides
from cs336_basics.training.sweep import (
    base_config,
    parse_sweep_args,
    run_sweep_from_args,
    sweep_parser,
)


def main() -> None:
    parser = sweep_parser(__doc__, "batch_size")
    parser.add_argument(
        "--min-batch-size", type=int, default=1, help="smallest batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=512,
        help="largest batch size tried (default: %(default)s)",
    )
    parser.add_argument(
        "--retune-lr", action="store_true", help="scale the learning rate with sqrt(batch size)"
    )
    args = parse_sweep_args(parser)
    if not 1 <= args.min_batch_size <= args.max_batch_size:
        parser.error("need 1 <= --min-batch-size <= --max-batch-size")
    sizes = [
        2**k
        for k in range(
            math.ceil(math.log2(args.min_batch_size)), int(math.log2(args.max_batch_size)) + 1
        )
    ]
    base = base_config(parser, args, len(sizes))
    base_batch, base_tokens = base.training.batch_size, base.total_steps * base.tokens_per_step
    runs = {}
    for b in sizes:
        steps = max(
            1, base_tokens // (b * base.model.context_length * base.training.grad_accum_steps)
        )
        # Same tokens per run; batch x eval_batches fixed, so every size sees the same windows.
        runs[f"batch={b}"] = short_run_overrides(base, steps, batch_size=b)
        if args.retune_lr:
            scale = math.sqrt(b / base_batch)
            runs[f"batch={b}"] |= {
                "optim.lr": base.optim.lr * scale,
                "optim.min_lr": base.optim.min_lr * scale,
            }
    run_sweep_from_args(
        args, base, runs, f"batch-size sweep ({base_tokens:,} tokens per run)", stop_after_oom=True
    )


if __name__ == "__main__":
    main()
