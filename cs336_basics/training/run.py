"""Train a Transformer LM from a TOML preset plus command-line overrides.

With no arguments it runs the whole pipeline on a laptop CPU in 5-6 minutes: real text
(TinyStories from data/, or its 22 MB validation file fetched from the Hugging Face Hub when
it answers within seconds), or offline the built-in generated stories; a BPE tokenizer, token
arrays, a small model, and a few generated stories.

    uv run python script/train.py
    uv run python script/train.py --config configs/tinystories.toml --optim.lr 3e-3
    uv run python script/train.py --config configs/tinystories.toml --resume
    uv run torchrun --standalone --nproc_per_node 2 script/train.py --config configs/tinystories.toml

Which settings a run takes:
- `--config PRESET`: the preset, then the command line's options;
- no `--config` and no `--data.*` option: the demo (configs/demo.toml) on the text above;
- no `--config` but `--data.*` options (your own data): only the demo's model, optimizer,
  schedule and step counts; none of its data, vocabulary size, run name, overwrite or time
  budget.
Data you name is used or the run stops: the demo corpus is written only when no data option
was given. `model.vocab_size`, when not given on the command line, is the size of the
tokenizer in data.tokenizer_dir if that exists.
"""

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cs336_basics.config import (
    TrainConfig,
    add_config_arguments,
    load_config,
    overrides_from_args,
    read_preset,
)
from cs336_basics.training.prepare import default_run, tokenizer_size
from cs336_basics.training.run_folder import RunFolder
from cs336_basics.training.signals import Interrupted

PRESETS = Path(__file__).resolve().parents[2] / "configs"
DEMO_PRESET = PRESETS / "demo.toml"
# What a run on your own data keeps of the demo preset: the model and how it is trained.
OWN_DATA_KEEPS = {
    "model": lambda key: key != "vocab_size",
    "optim": lambda key: True,
    "schedule": lambda key: True,
    "training": lambda key: (
        key
        in {"max_steps", "batch_size", "eval_interval", "eval_batches", "log_interval", "threads"}
    ),
}
# Command-line flags that are shorthands for config keys.
FLAGS = {
    "resume": "training.resume",
    "wandb": "logging.wandb",
    "device": "training.device",
    "compile": "training.compile",
}


@dataclass
class RunPlan:
    """A resolved run: its config, and in words which preset and which data it uses."""

    cfg: TrainConfig
    preset: str
    data: str


def _parser(defaults: TrainConfig) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="script/train.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Every [section] option overrides the preset; lists are comma-separated, "
        "booleans true/false, optional values 'none'.",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML preset (default: the demo)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint of the run"
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also log to Weights & Biases (--logging.wandb_mode)"
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda", "mps"],
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


def _own_data_base() -> dict[str, dict]:
    """The part of the demo preset that a run on the user's own data keeps."""
    demo = read_preset(DEMO_PRESET)
    return {
        section: {k: v for k, v in demo.get(section, {}).items() if keep(k)}
        for section, keep in OWN_DATA_KEEPS.items()
    }


def _flat(nested: dict[str, dict]) -> dict[str, object]:
    return {f"{s}.{k}": v for s, values in nested.items() for k, v in values.items()}


def plan_run(argv: list[str]) -> tuple[RunPlan, argparse.Namespace]:
    """Parse the command line into a validated config (ValueError on a bad one; argparse
    exits on an unknown option or --help, before any data is looked for)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    preset = pre.parse_known_args(argv)[0].config
    given_data = any(a.startswith("--data.") for a in argv)
    if preset:
        base, preset_name = _flat(read_preset(preset)), str(preset)
    elif given_data:
        base = _flat(_own_data_base())
        preset_name = f"{DEMO_PRESET.name} (its model, optimizer and step counts only)"
    else:
        base, preset_name = _flat(read_preset(DEMO_PRESET)), DEMO_PRESET.name
    args = _parser(load_config(None, base)).parse_args(argv)

    data = None
    if not (preset or given_data):  # the default run: real text if it can be had
        data, demo_data = default_run()
        base.update(demo_data)
    cli = overrides_from_args(args)
    for flag, key in FLAGS.items():
        if getattr(args, flag):
            cli[key] = getattr(args, flag)
    if given_data and "data.demo_corpus" not in cli:
        cli["data.demo_corpus"] = False  # named data is used as named, never generated
    tokenizer_dir = cli.get("data.tokenizer_dir", base.get("data.tokenizer_dir"))
    size = tokenizer_size(tokenizer_dir)
    if size is not None and "model.vocab_size" not in cli:
        cli["model.vocab_size"] = size
    cfg = load_config(None, {**base, **cli})
    if data is None:
        data = f"{cfg.data.train_tokens} / {cfg.data.val_tokens}"
        if cfg.data.train_text:
            data += f" (built from {cfg.data.train_text} / {cfg.data.val_text} if missing)"
    return RunPlan(cfg, preset_name, data), args


def sample_stories(
    run_dir: Path, cfg: TrainConfig, prompt: str, num_samples: int, max_tokens: int
) -> list[str]:
    """Generate `num_samples` stories from the run's newest checkpoint (temperature 0.8,
    top-p 0.95, seeded by the run's seed); also written to the run's samples.txt."""
    import torch

    from cs336_basics.generation import generate_text
    from cs336_basics.tokenizer.tokenizer import Tokenizer
    from cs336_basics.training.device import resolve_device
    from cs336_basics.training.trainer import load_trained_model

    model, _ = load_trained_model(run_dir, device=resolve_device(cfg.training.device))
    if next(model.parameters()).device.type == "cpu":
        torch.set_num_threads(1)  # one token at a time is tiny work: more threads only wait
    tokenizer = Tokenizer.from_dir(cfg.data.tokenizer_dir, cfg.data.special_tokens)
    stories = generate_text(
        model,
        tokenizer,
        prompt,
        max_new_tokens=max_tokens,
        temperature=0.8,
        top_p=0.95,
        num_samples=num_samples,
        seed=cfg.training.seed,
    )
    stories = [prompt + s for s in stories]
    RunFolder(run_dir).samples.write_text("\n\n<|endoftext|>\n\n".join(stories) + "\n")
    return stories


def artifacts(cfg: TrainConfig) -> list[tuple[str, Path | str]]:
    """What a run leaves behind, and where (things that do not exist are left out)."""
    folder = RunFolder(cfg.run_dir)
    listed = [
        ("tokenizer", cfg.data.tokenizer_dir),
        ("token arrays", f"{cfg.data.train_tokens}, {cfg.data.val_tokens}"),
        ("config", folder.config),
        ("metrics", folder.metrics),
        ("loss curve", folder.loss_curve),
        ("checkpoints", folder.checkpoint_dir),
        ("samples", folder.samples),
    ]
    return [(what, p) for what, p in listed if p and (isinstance(p, str) or p.exists())]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        plan, args = plan_run(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = plan.cfg
    from cs336_basics.training.distributed import launched_rank
    from cs336_basics.training.trainer import train

    # One rank speaks for the run; errors still reach stderr from every rank.
    is_main = launched_rank() == 0
    say = print if is_main else (lambda *_, **__: None)
    say(
        f"cs336-basics: a {cfg.model.num_layers}-layer, d_model={cfg.model.d_model} "
        f"Transformer LM; preset: {plan.preset}\n  data: {plan.data}\n  run folder: {cfg.run_dir}"
    )
    start = time.perf_counter()
    try:
        result = train(cfg)
    except Interrupted as e:
        print(f"{e}: stopped before training began; nothing to save", file=sys.stderr)
        return e.exit_code
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.interrupted:
        say(
            f"stopped by {signal.Signals(result.stop_signal).name} at step {result.steps}; checkpoint "
            "saved. Continue with the same command plus --resume.",
            file=sys.stderr,
        )
        return 128 + result.stop_signal
    if result.diverged:
        print(
            f"error: training diverged at step {result.steps + 1} "
            f"(see {RunFolder(result.run_dir).metrics})",
            file=sys.stderr,
        )
        return 1
    if args.samples > 0 and cfg.data.tokenizer_dir and is_main:
        stories = sample_stories(result.run_dir, cfg, args.prompt, args.samples, args.sample_tokens)
        say("\nGenerated stories (temperature 0.8, top-p 0.95):")
        for i, story in enumerate(stories, 1):
            say(f"\n--- story {i} ---\n{story.strip()}")
    say(f"\nDone in {time.perf_counter() - start:.0f}s: {result.summary()}.")
    say("Artifacts:")
    for what, path in artifacts(cfg):
        say(f"  {what:<13} {path}")
    say("Generate more stories: uv run python script/generate_and_decode.py --help")
    return 0
