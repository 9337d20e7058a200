"""A series of training runs that differ in a few config values, compared in one plot and one table.

Every experiment driver in `script/` (learning rate, batch size, the ablations) is a base
config plus `{label: overrides}`; this module runs them one after another, records a run
that diverges or runs out of memory instead of stopping the series, and writes
`<out_dir>/<name>/<name>.png` (validation loss vs steps and vs wall-clock) and `.md`, beside
the runs (or in pics/ when asked, for the README).
"""

import argparse
import math
import multiprocessing
import os
import re
import statistics
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cs336_basics.config import (
    TrainConfig,
    config_to_dict,
    load_config,
    short_run_overrides,
    with_overrides,
)
from cs336_basics.fileio import atomic_write
from cs336_basics.markdown import markdown_table
from cs336_basics.training.logging import read_metrics
from cs336_basics.training.plots import plot_curves
from cs336_basics.training.run_folder import RunFolder
from cs336_basics.training.trainer import TrainResult, train


@dataclass
class RunOutcome:
    """One run of a sweep: its result, or the reason it could not train (e.g. out of memory)."""

    label: str
    overrides: dict[str, Any]
    result: TrainResult | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        """`ok`, `NaN/inf` (stopped on a non-finite loss), `loss rose` (ended above its
        step-0 validation loss), or the error."""
        if self.error:
            return self.error
        r = self.result
        if r.diverged:
            return "NaN/inf"
        if r.final_val_loss is None or r.final_val_loss > r.initial_val_loss:
            return "loss rose"
        return "ok"


def steps_for_budget(
    cfg: TrainConfig, budget_s: float, num_runs: int, name: str, probe_steps: int = 10
) -> int:
    """How many steps of `cfg` fit `budget_s` seconds split over `num_runs` runs.

    Times a short probe run (`<out_dir>/<name>/probe`) for its training throughput and keeps a
    fifth of the budget for evaluation, data preparation and start-up.
    """
    probe = with_overrides(
        cfg,
        {
            **short_run_overrides(cfg, probe_steps),
            "training.log_interval": 1,
            "training.eval_batches": 1,
            "training.out_dir": str(Path(cfg.training.out_dir) / name),
            "training.run_name": "probe",
            "training.overwrite": True,
            "training.resume": False,
        },
    )
    rows = [
        r["tokens_per_s"] for r in train(probe, progress=False).metrics if r.get("tokens_per_s")
    ]
    tokens_per_s = statistics.median(rows[1:] or rows)  # the first step pays for warm-up
    return max(1, int(0.8 * budget_s / num_runs * tokens_per_s / cfg.tokens_per_step))


def _identity(cfg: TrainConfig) -> dict:
    """What decides a run's outcome: the config minus where it is written and how it starts."""
    d = config_to_dict(cfg)
    d["training"] = {
        k: v
        for k, v in d["training"].items()
        if k not in ("run_name", "out_dir", "overwrite", "resume")
    }
    return d


def find_finished_run(cfg: TrainConfig) -> TrainResult | None:
    """A run of any sweep beside `cfg.run_dir`'s (`<out_dir>/<sweep>/<label>`) trained with the
    same config (where it was written aside) to its last step, as a TrainResult read back from
    its logs; None if there is none."""
    want = _identity(cfg)
    for config_file in sorted(Path(cfg.training.out_dir).parent.glob("*/*/config.toml")):
        run_dir = config_file.parent
        try:
            if _identity(load_config(config_file)) != want:
                continue
        except ValueError:  # written by an older version of the config
            continue
        rows = read_metrics(RunFolder(run_dir).metrics)
        # Finished: it reached its last step, or its time budget and the validation after it.
        if rows and (
            "full_val_loss" in rows[-1]
            or (rows[-1]["step"] == cfg.total_steps and rows[-1].get("val_loss") is not None)
        ):
            return TrainResult.from_rows(run_dir, rows)
    return None


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError)
        and bool(re.search(r"out of memory|can't allocate memory", str(e)))
    )


def run_sweep(
    base: TrainConfig,
    runs: Mapping[str, Mapping[str, Any]],
    name: str,
    report_dir: str | Path | None = None,
    title: str = "",
    progress: bool = True,
    stop_after_oom: bool = False,
    reuse: bool = False,
    jobs: int = 1,
) -> list[RunOutcome]:
    """Train `base` with each `runs[label]` overrides, then write the plot and table.

    The sweep has its own folder, `<base out_dir>/<name>/`: each run in `<label>/` there
    (replacing an earlier sweep's run of the same label), the plot and table beside them, or in
    `report_dir` when given (e.g. pics/ for the README). Every config is built and validated,
    and every output folder checked writable, before the first run starts. An out-of-memory
    run is recorded and, with `stop_after_oom`, ends the series (the larger sizes that follow
    would fail too). With `reuse`, a run whose config matches a finished run of any sweep
    under the same out_dir (e.g. the baseline shared by several ablations) is read back
    instead of trained. With `jobs` > 1, that many runs train at a time, each in its own
    process (give each `training.threads` so that they share the cores).
    """
    sweep_dir = Path(base.training.out_dir) / name
    configs = {
        label: with_overrides(
            base,
            {
                "training.out_dir": str(sweep_dir),
                "training.run_name": _slug(label),
                "training.overwrite": True,
                "training.resume": False,
                **overrides,
            },
        )
        for label, overrides in runs.items()
    }
    report_dir = Path(report_dir) if report_dir is not None else sweep_dir
    _check_writable(report_dir)
    for cfg in configs.values():
        RunFolder(cfg.run_dir).check_usable(resume=False, overwrite=True)
    outcomes: dict[str, RunOutcome] = {}
    to_train = []
    for i, (label, cfg) in enumerate(configs.items(), start=1):
        found = find_finished_run(cfg) if reuse else None
        if found:
            tqdm.write(f"[{name} {i}/{len(configs)}] {label}: reusing {found.run_dir}")
            outcomes[label] = RunOutcome(label, dict(runs[label]), result=found)
        else:
            to_train.append((label, dict(runs[label]), cfg))
    if jobs > 1 and to_train:  # side by side, each in a process of its own, quietly
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(jobs, len(to_train)), mp_context=context) as pool:
            for label, _, cfg in to_train:
                tqdm.write(f"[{name}] {label}: {_length(cfg)} -> {cfg.run_dir}")
            futures = [pool.submit(_train_one, *run, False) for run in to_train]
            for (label, _, _), future in zip(to_train, futures):
                outcomes[label] = future.result()
                tqdm.write(f"[{name}] {label}: {outcomes[label].status}")
    else:
        for i, (label, overrides, cfg) in enumerate(to_train, start=1):
            tag = f"[{name} {i}/{len(to_train)}] {label}"
            tqdm.write(f"{tag}: {_length(cfg)} -> {cfg.run_dir}")
            outcomes[label] = _train_one(label, overrides, cfg, progress)
            tqdm.write(f"{tag}: {outcomes[label].status}")
            if outcomes[label].error and stop_after_oom:
                break
    outcomes = [outcomes[label] for label in configs if label in outcomes]
    write_report(outcomes, name, report_dir, title or name, describe(base))
    return outcomes


def _train_one(label: str, overrides: dict, cfg: TrainConfig, progress: bool) -> RunOutcome:
    """Train one run of a sweep; running out of memory is an outcome, not an error."""
    outcome = RunOutcome(label, overrides)
    try:
        outcome.result = train(cfg, progress=progress)
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        outcome.error = "out of memory"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return outcome


def _check_writable(folder: Path) -> None:
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        problem = "is a file, not a directory" if not existing.is_dir() else "is not writable"
        raise OSError(f"cannot write the sweep's plot and table to {folder}: {existing} {problem}")


def _length(cfg: TrainConfig) -> str:
    """How long a run trains: its time budget where it has one (the ladder's runs have no
    meaningful step count), else its steps."""
    budget = cfg.training.time_budget_s
    return f"{budget / 60:g} minutes" if budget is not None else f"{cfg.total_steps:,} steps"


def describe(cfg: TrainConfig) -> str:
    """One line saying what every run of a sweep shares, for the report."""
    m, t, o = cfg.model, cfg.training, cfg.optim
    return (
        f"Base: d_model {m.d_model}, {m.num_layers} layers, {m.num_heads} heads, d_ff {m.d_ff}, "
        f"vocab {m.vocab_size}, context {m.context_length}; {_length(cfg)} of "
        f"{cfg.tokens_per_step:,}-token steps (batch {t.batch_size} x {t.grad_accum_steps}); "
        f"lr {o.lr:g} -> {o.min_lr:g}; train {cfg.data.train_tokens}, "
        f"validation {cfg.data.val_tokens} ({t.eval_batches} batches)."
    )


def summary_table(outcomes: list[RunOutcome]) -> str:
    """Markdown: run, final/best validation loss (and on the whole validation set, where
    runs measured it), divergence, steps, tokens, time."""

    def loss(v: float | None) -> str:
        return "-" if v is None or not math.isfinite(v) else f"{v:.4f}"

    whole = any(o.result and o.result.full_val_loss is not None for o in outcomes)
    rows = []
    for o in outcomes:
        r = o.result
        if r is None:
            rows.append([o.label, "-", "-", *(["-"] if whole else []), o.status, "-", "-", "-"])
            continue
        diverged = "no" if o.status == "ok" else f"yes ({o.status})"
        full = [loss(r.full_val_loss)] if whole else []
        rows.append(
            [
                o.label,
                loss(r.final_val_loss),
                loss(r.best_val_loss),
                *full,
                diverged,
                f"{r.steps:,}",
                f"{r.tokens_seen:,}",
                f"{r.seconds:.0f}",
            ]
        )
    heads = ["run", "final val loss", "best val loss", *(["whole validation set"] if whole else [])]
    return markdown_table([*heads, "diverged?", "steps", "tokens", "time (s)"], rows)


def write_report(
    outcomes: list[RunOutcome], name: str, pics_dir: str | Path, title: str, note: str = ""
) -> tuple[Path, Path]:
    """`pics_dir/<name>.png` (curves of the runs that trained, if any) and `pics_dir/<name>.md`
    (`note`, then the table); the table is printed too. Returns both paths."""
    pics_dir = Path(pics_dir)
    pics_dir.mkdir(parents=True, exist_ok=True)
    png, md = pics_dir / f"{name}.png", pics_dir / f"{name}.md"
    curves = {o.label: o.result.metrics for o in outcomes if o.result}
    if curves:
        plot_curves(curves, png, title=title)
    table = summary_table(outcomes)
    with atomic_write(md, "w", encoding="utf-8") as f:
        f.write(f"# {title}\n\n" + (f"{note}\n\n" if note else "") + f"{table}\n")
        f.write(f"\n![{name}]({png.name})\n" if curves else "")
    print(
        f"\n{table}\n\n"
        + (f"plot: {png}\n" if curves else "no run trained: no plot\n")
        + f"table: {md}"
    )
    return png, md


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "run"


# ---------------------------------------------------------------- shared command line


def sweep_parser(description: str, name: str) -> argparse.ArgumentParser:
    """The options every experiment script shares; add the script's own, then `parse_sweep_args`."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other option is a config override applied to every run, written as in "
        "script/train.py: --model.d_model 256, --training.batch_size=16, optim.weight_decay=0.01.",
    )
    parser.add_argument(
        "--config",
        default="configs/demo.toml",
        help="base preset, any file in configs/ (default: %(default)s)",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps",
        type=int,
        help="shorten every run to this many steps, with warmup, evaluations "
        "and logging scaled to fit (default: the preset's own length)",
    )
    budget.add_argument(
        "--budget-minutes",
        type=float,
        help="fit the whole series into about this many minutes: a 10-step probe run measures "
        "throughput and sets the steps per run (default: off)",
    )
    parser.add_argument(
        "--name",
        default=name,
        help="sweep name: run folders <out_dir>/<name>-<label>, "
        "<out_dir>/<name>/<label>, plot and table <out_dir>/<name>/<name>.png and .md "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--pics",
        default=None,
        metavar="DIR",
        help="write the plot and the table to DIR instead (e.g. pics, the README's figures); "
        "default: the sweep's own folder",
    )
    parser.add_argument(
        "--reuse-runs",
        action="store_true",
        help="read back, instead of training again, any run that a finished run in the same "
        "out_dir already did with the identical config (e.g. the baseline the ablations share)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no per-step progress bars or log lines"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs to train at a time, each in its own process and quiet; set "
        "--training.threads so that jobs x threads fits the cores (default: %(default)s)",
    )
    return parser


def parse_sweep_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the script's options; everything else lands in `args.overrides`."""
    args, args.overrides = parser.parse_known_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def run_sweep_from_args(
    args: argparse.Namespace,
    base: TrainConfig,
    runs: Mapping[str, Mapping[str, Any]],
    title: str,
    stop_after_oom: bool = False,
) -> list[RunOutcome]:
    """`run_sweep` with the name, pics folder, progress and reuse the shared options chose."""
    return run_sweep(
        base,
        runs,
        args.name,
        args.pics,
        title,
        progress=not args.quiet,
        stop_after_oom=stop_after_oom,
        reuse=args.reuse_runs,
        jobs=args.jobs,
    )


def base_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, num_runs: int
) -> TrainConfig:
    """The preset with the command-line overrides, shortened by --steps / --budget-minutes;
    a bad preset or override exits with the parser's usage error."""
    try:
        cfg = load_config(args.config, args.overrides)
    except ValueError as e:
        parser.error(str(e))
    steps = args.steps
    if args.budget_minutes is not None:
        steps = steps_for_budget(cfg, args.budget_minutes * 60, num_runs, args.name)
        print(f"budget {args.budget_minutes:g} min over {num_runs} runs: {steps:,} steps each")
    if not steps:
        return cfg
    # The short-run settings go under the command line's own overrides, which keep the last word.
    short = [
        f"{k}={'none' if v is None else v}" for k, v in short_run_overrides(cfg, steps).items()
    ]
    return load_config(args.config, [*short, *args.overrides])
