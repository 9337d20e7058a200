"""Evaluate a trained checkpoint: validation loss / perplexity on a token file, and HellaSwag accuracy.

  uv run python script/evaluate.py --checkpoint runs/tinystories_cpu --tokens data/tinystories/valid.npy
  uv run python script/evaluate.py --checkpoint runs/tinystories_cpu --hellaswag data/hellaswag_val.jsonl

HellaSwag files (a local jsonl: this script downloads nothing) may be in the original format
(ctx, endings, label) or OLMES's (query, choices, gold). Each ending is scored by its mean token loss after the context, cut from the left to
the model's context length; accuracy by loss per byte of the ending is printed as well.
"""

import argparse
import sys

import torch

from cs336_basics.data import check_token_range, load_tokens
from cs336_basics.hellaswag import Example, load_examples, score_examples
from cs336_basics.nn.functional import perplexity
from cs336_basics.tokenizer.tokenizer import Tokenizer
from cs336_basics.training.evaluation import estimate_loss
from cs336_basics.training.prepare import check_vocab_size
from cs336_basics.training.trainer import load_trained_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint file, or a run folder (its newest checkpoint)",
    )
    parser.add_argument(
        "--tokens", help="token file (.npy, or raw .bin with --token-dtype) to compute the loss on"
    )
    parser.add_argument(
        "--token-dtype", help="dtype of a raw .bin token file, e.g. uint16 (default: from the file)"
    )
    parser.add_argument(
        "--num-batches",
        type=int,
        default=None,
        help="score this many batches of non-overlapping windows, chosen by --seed "
        "(default: every window of the file)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="which windows --num-batches picks (default: 0)"
    )
    parser.add_argument("--hellaswag", help="HellaSwag jsonl file to score")
    parser.add_argument(
        "--limit", type=int, help="score only the first N HellaSwag examples (default: all)"
    )
    parser.add_argument(
        "--lowercase",
        action="store_true",
        help="lowercase HellaSwag text first (for a model trained on lowercased text)",
    )
    parser.add_argument(
        "--tokenizer",
        help="tokenizer folder (vocab.json + merges.txt) for HellaSwag "
        "(default: the run config's data.tokenizer_dir)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="sequences per forward pass (default: 32)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda > mps > cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: one per core; 1 is often faster for a small model "
        "on a machine shared with other work)",
    )
    args = parser.parse_args()
    if not (args.tokens or args.hellaswag):
        parser.error("nothing to do: give --tokens and/or --hellaswag")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        model, cfg = load_trained_model(args.checkpoint, device=args.device)
        tokenizer_dir = args.tokenizer or cfg.data.tokenizer_dir
        if args.hellaswag:
            check_vocab_size(tokenizer_dir, cfg.model.vocab_size)
        device = next(model.parameters()).device
        context_length = cfg.model.context_length
        print(
            f"model: {args.checkpoint} ({sum(p.numel() for p in model.parameters()):,} parameters, "
            f"context {context_length}) on {device}"
        )
        if args.tokens:
            tokens = load_tokens(args.tokens, args.token_dtype)
            check_token_range(tokens, cfg.model.vocab_size)
            loss = estimate_loss(
                model,
                tokens,
                args.batch_size,
                context_length,
                args.num_batches,
                device,
                seed=args.seed,
                autocast=cfg.training.autocast,
            )
            print(f"{args.tokens}: loss {loss:.4f} nats/token, perplexity {perplexity(loss):.2f}")
        if args.hellaswag:
            tokenizer = Tokenizer.from_dir(tokenizer_dir, cfg.data.special_tokens)
            examples = load_examples(args.hellaswag, args.limit)
            if args.lowercase:
                examples = [
                    Example(e.context.lower(), [x.lower() for x in e.endings], e.label)
                    for e in examples
                ]
            scores = score_examples(
                model, tokenizer.encode, examples, context_length, args.batch_size
            )
            print(
                f"{args.hellaswag}: {len(examples)} examples, accuracy {scores.accuracy():.4f} "
                f"(mean token loss), {scores.accuracy_per_byte():.4f} (loss per byte); "
                f"chance {1 / len(examples[0].endings):.2f}"
            )
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
