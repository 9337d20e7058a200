"""Complete a prompt with a trained model: temperature, top-p, top-k, several seeded samples.

  uv run python script/generate_and_decode.py --checkpoint runs/demo
  uv run python script/generate_and_decode.py --checkpoint runs/tinystories_cpu/checkpoints/step_00004883.pt \\
      --prompt "The little dog" --num-samples 3 --temperature 0.7 --top-p 0.9 --seed 1

Decoding uses a KV cache (one position per new token) and stops at the stop token or after
--max-new-tokens. Past the model's context length the window slides (see
cs336_basics/generation.py).
"""

import argparse
import secrets
import sys
import time
from pathlib import Path

import torch

from cs336_basics.generation import generate_text
from cs336_basics.tokenizer.tokenizer import Tokenizer
from cs336_basics.training.prepare import check_vocab_size
from cs336_basics.training.trainer import load_trained_model


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint file, or a run folder (its newest checkpoint)",
    )
    p.add_argument(
        "--tokenizer-dir",
        help="folder with vocab.json + merges.txt (default: the run config's data.tokenizer_dir)",
    )
    p.add_argument(
        "--prompt",
        default="Once upon a time",
        help="text to complete; '' starts a fresh document (default: %(default)r)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="tokens to generate at most per sample (default: 256)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="softmax temperature; 0 = greedy (default: 0.8)",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=0.95,
        help="nucleus sampling: keep the most probable tokens "
        "up to this total probability; 1 = off (default: 0.95)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="keep only the k most probable tokens (default: off)",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="completions to draw, decoded as one batch (default: 1)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed; the same seed gives the same samples (default: a fresh one, printed)",
    )
    p.add_argument(
        "--stop-token",
        default="<|endoftext|>",
        help="special token that ends a sample; '' = none (default: %(default)s)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda > mps > cpu)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch; one token at a time is small work, which more threads "
        "slow down on a busy machine (default: 1; 0: one per core)",
    )
    return p.parse_args()


def main() -> None:
    args = parse_args()
    seed = secrets.randbits(31) if args.seed is None else args.seed
    try:
        if not Path(args.checkpoint).exists():
            raise FileNotFoundError(
                f"checkpoint {args.checkpoint} not found; give a checkpoint file or a run folder"
            )
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        model, cfg = load_trained_model(args.checkpoint, device=args.device)
        tokenizer_dir = args.tokenizer_dir or cfg.data.tokenizer_dir
        check_vocab_size(tokenizer_dir, cfg.model.vocab_size)
        tokenizer = Tokenizer.from_dir(tokenizer_dir, cfg.data.special_tokens)
        device = next(model.parameters()).device
        print(
            f"model: {args.checkpoint} ({sum(p.numel() for p in model.parameters()):,} parameters, "
            f"context {cfg.model.context_length}) on {device}; tokenizer: {tokenizer_dir}"
        )
        top_k = f", top-k {args.top_k}" if args.top_k else ""
        print(
            f"sampling {args.num_samples} x up to {args.max_new_tokens} tokens: temperature "
            f"{args.temperature}, top-p {args.top_p}{top_k}, seed {seed}"
        )
        start = time.perf_counter()
        completions = generate_text(
            model,
            tokenizer,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            stop_token=args.stop_token or None,
            num_samples=args.num_samples,
            seed=seed,
        )
        seconds = time.perf_counter() - start
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    for i, text in enumerate(completions, 1):
        print(f"\n--- sample {i} ---\n{args.prompt}{text}")
    print(f"\n{len(completions)} samples in {seconds:.1f}s (seed {seed})")


if __name__ == "__main__":
    main()
