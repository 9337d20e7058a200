"""Train a Transformer LM from a TOML preset plus command-line overrides.

With no arguments it runs the whole pipeline on a laptop in about 10 minutes, offline:
the built-in story corpus (or a slice of TinyStories if it is in data/), a BPE tokenizer,
token arrays, a small model, and a few generated stories.

    uv run python script/train.py
    uv run python script/train.py --config configs/tinystories.toml --optim.lr 3e-3
    uv run python script/train.py --config configs/tinystories.toml --resume
"""

import argparse
import sys
import time
from pathlib import Path

import torch

DEFAULT_PRESET = "configs/demo.toml"


def build_parser(defaults, description: str) -> argparse.ArgumentParser:
    from cs336_basics.config import add_config_arguments

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + "\n\n" + description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Every [section] option overrides the preset; lists are comma-separated, "
        "booleans true/false, optional values 'none'.",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help=f"TOML preset (default: {DEFAULT_PRESET}, or a TinyStories slice if data/ has it)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint of the run"
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log to Weights & Biases (see --logging.wandb_mode)",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda", "mps"],
        default=None,
        help=f"where to train (default: {defaults.training.device})",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--samples", type=int, default=3, help="stories to generate at the end (default: 3)"
    )
    parser.add_argument(
        "--sample-tokens", type=int, default=200, help="max tokens per story (default: 200)"
    )
    parser.add_argument(
        "--prompt",
        default="Once upon a time",
        help="start of each generated story (default: %(default)r)",
    )
    add_config_arguments(parser, defaults)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cs336_basics.config import load_config, overrides_from_args
    from cs336_basics.training.prepare import default_run

    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    preset = pre.parse_known_args(argv)[0].config
    description, base = ("", {}) if preset else default_run()
    try:
        defaults = load_config(preset or DEFAULT_PRESET, base)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = build_parser(defaults, f"Data: {description}" if description else "").parse_args(argv)

    overrides = {**base, **overrides_from_args(args)}
    for flag, key, value in (
        (args.resume, "training.resume", True),
        (args.wandb, "logging.wandb", True),
        (args.device, "training.device", args.device),
        (args.compile, "training.compile", True),
    ):
        if flag:
            overrides[key] = value
    try:
        cfg = load_config(preset or DEFAULT_PRESET, overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from cs336_basics.training.device import resolve_device
    from cs336_basics.training.trainer import load_trained_model, train

    print(
        f"cs336-basics: training a {cfg.model.num_layers}-layer, d_model={cfg.model.d_model} Transformer LM "
        f"from {preset or DEFAULT_PRESET}" + (f" on {description}" if description else "") + "."
    )
    print(
        f"  data: {cfg.data.train_tokens} / {cfg.data.val_tokens} (built from raw text if missing); "
        f"run folder: {cfg.run_dir}"
    )
    start = time.perf_counter()
    try:
        result = train(cfg)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted (no checkpoint saved for the current step)", file=sys.stderr)
        return 130

    if result.interrupted:
        print(f"stopped at step {result.steps}; continue with the same command plus --resume")
        return 130
    if result.diverged:
        print(
            f"error: training diverged at step {result.steps + 1} (see {result.run_dir / 'metrics.jsonl'})",
            file=sys.stderr,
        )
        return 1

    samples_path = None
    if args.samples > 0:
        from cs336_basics.generation import generate_text
        from cs336_basics.tokenizer.tokenizer import Tokenizer
        from cs336_basics.training.prepare import tokenizer_files

        model, _ = load_trained_model(result.run_dir, device=resolve_device(cfg.training.device))
        if next(model.parameters()).device.type == "cpu":
            torch.set_num_threads(
                1
            )  # one token at a time is tiny work: more threads only wait on each other
        tokenizer = Tokenizer.from_files(
            *tokenizer_files(cfg.data.tokenizer_dir), cfg.data.special_tokens
        )
        stories = generate_text(
            model,
            tokenizer,
            args.prompt,
            max_new_tokens=args.sample_tokens,
            temperature=0.8,
            top_p=0.95,
            num_samples=args.samples,
            seed=cfg.training.seed,
        )
        stories = [args.prompt + s for s in stories]
        print("\nGenerated stories (temperature 0.8, top-p 0.95):")
        for i, s in enumerate(stories, 1):
            print(f"\n--- story {i} ---\n{s.strip()}")
        samples_path = result.run_dir / "samples.txt"
        samples_path.write_text("\n\n<|endoftext|>\n\n".join(stories) + "\n")

    val = [r["val_loss"] for r in result.metrics if r.get("val_loss") is not None]
    run = result.run_dir
    print(
        f"\nDone in {time.perf_counter() - start:.0f}s: {result.steps:,} steps, {result.tokens_seen:,} tokens"
        + (
            f"; validation loss {val[0]:.3f} -> {val[-1]:.3f} (best {min(val):.3f})."
            if val
            else "."
        )
    )
    print("Artifacts:")
    for what, path in [
        ("tokenizer", Path(cfg.data.tokenizer_dir)),
        ("token arrays", f"{cfg.data.train_tokens}, {cfg.data.val_tokens}"),
        ("config", run / "config.toml"),
        ("metrics", run / "metrics.jsonl"),
        ("loss curve", run / "loss_curve.png"),
        ("checkpoints", run / "checkpoints"),
        ("samples", samples_path),
    ]:
        if path is not None:
            print(f"  {what:<13} {path}")
    print("Generate more stories: uv run python script/generate_and_decode.py --help")
    return 0


if __name__ == "__main__":
    sys.exit(main())
