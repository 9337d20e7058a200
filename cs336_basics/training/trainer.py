"""The training loop: data -> model -> AdamW steps, with evaluation, logs, checkpoints and resume.

A run lives in `out_dir/run_name/`:
    config.toml        the resolved config (loadable again with --config)
    metrics.jsonl      one JSON row per logged step
    loss_curve.png     train/validation loss vs steps and vs wall-clock time
    checkpoints/       step_XXXXXXXX.pt, the newest `keep_last` kept

Reproducibility: the batch of step s is drawn from `np.random.default_rng([seed, s])`, so the
data order needs no sampler state, and a resumed run (model, optimizer, schedule, logs
restored from the checkpoint) reproduces the uninterrupted run exactly on CPU.
"""

import math
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cs336_basics.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from cs336_basics.config import TrainConfig, config_from_dict, config_to_dict, to_toml
from cs336_basics.data import check_token_range, get_batch, load_tokens
from cs336_basics.fileio import atomic_write
from cs336_basics.nn.functional import cross_entropy, perplexity
from cs336_basics.nn.transformer import TransformerLM
from cs336_basics.optim import SGD, AdamW, clip_gradients, get_lr_cosine_schedule
from cs336_basics.training.device import autocast_context, enable_tf32, resolve_device
from cs336_basics.training.evaluation import estimate_loss
from cs336_basics.training.logging import MetricsLogger, read_metrics, start_wandb
from cs336_basics.training.plots import plot_curves
from cs336_basics.training.prepare import prepare_data


@dataclass
class TrainResult:
    run_dir: Path
    steps: int  # optimizer steps completed
    tokens_seen: int
    seconds: float  # wall-clock time of the whole run, resumed segments included
    final_val_loss: float | None
    best_val_loss: float | None
    diverged: bool  # stopped on a NaN/inf loss or gradient
    metrics: list[dict] = field(default_factory=list)  # every logged row, from step 0
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM (a checkpoint was saved)


# ---------------------------------------------------------------- checkpoints on disk


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((run_dir / "checkpoints").glob("step_*.pt"))


def _prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)


def _model_mismatch(saved: dict, wanted: dict) -> list[str]:
    return [
        f"model.{k}: checkpoint {saved.get(k)!r}, config {v!r}"
        for k, v in wanted.items()
        if saved.get(k) != v
    ]


# ---------------------------------------------------------------- signals


@contextmanager
def _stop_on_signals():
    """Turn the first Ctrl-C / SIGTERM into a flag the loop checks after each step (so it can
    save a checkpoint); a second Ctrl-C interrupts at once. No-op outside the main thread."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.set()
        tqdm.write(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step ..."
        )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- the run


def _build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return SGD(model.parameters(), lr=o.lr)
    return AdamW(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


def _lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (1-based): warmup, then cosine down to min_lr,
    which is reached exactly at the last step unless schedule.cosine_cycle_iters says otherwise.
    A warmup longer than the cycle is cut to it (tiny runs)."""
    cycle = cfg.schedule.cosine_cycle_iters or total_steps
    warmup = min(cfg.schedule.warmup_iters, cycle)
    return get_lr_cosine_schedule(step, cfg.optim.lr, cfg.optim.min_lr, warmup, cycle)


def _prepare_run_dir(cfg: TrainConfig) -> Path:
    """Create the run folder; refuse to mix a fresh run into an earlier one's files."""
    run_dir = cfg.run_dir
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"cannot create the run folder {run_dir}: {e.strerror or e}. "
            "Choose a writable --training.out_dir."
        ) from e
    if not os.access(run_dir / "checkpoints", os.W_OK):
        raise OSError(
            f"the run folder {run_dir} is not writable; choose another --training.out_dir"
        )
    earlier = list_checkpoints(run_dir) or (run_dir / "metrics.jsonl").exists()
    if earlier and not cfg.training.resume:
        if not cfg.training.overwrite:
            raise FileExistsError(
                f"{run_dir} already holds a run. Continue it with --resume, start over there with "
                "--training.overwrite true (deletes it), or pick another --training.run_name."
            )
        shutil.rmtree(run_dir / "checkpoints")
        (run_dir / "checkpoints").mkdir()
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return run_dir


def _load_split(path: str, dtype: str, vocab_size: int) -> np.ndarray:
    """Memory-map a token file (its dtype checked by `load_tokens`) and check every id fits the vocab."""
    tokens = load_tokens(path, None if dtype == "auto" else dtype)
    check_token_range(tokens, vocab_size)
    return tokens


def _resume(
    run_dir: Path, cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple:
    """Restore the newest checkpoint; return (step, elapsed_s, best_val_loss, metric rows up to step)."""
    newest = list_checkpoints(run_dir)[-1]
    ckpt = read_checkpoint(newest)
    extra = ckpt["extra"]
    mismatch = _model_mismatch(
        extra.get("config", {}).get("model", {}), config_to_dict(cfg)["model"]
    )
    if mismatch:
        raise ValueError(
            f"cannot resume from {newest}: it holds a different model shape\n  "
            + "\n  ".join(mismatch)
            + "\nUse the run's own config.toml, or start a new run."
        )
    step = load_checkpoint(ckpt, model, optimizer)
    torch.set_rng_state(extra["torch_rng"])
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["step"] <= step]
    return step, extra["elapsed_s"], extra["best_val_loss"], rows


def _train_step(
    forward, optimizer, params, data, cfg: TrainConfig, step: int, lr: float, device: torch.device
) -> tuple[float, float]:
    """Forward/backward over `grad_accum_steps` micro-batches, clip, and (when finite) update.

    The batches come from `np.random.default_rng([seed, step])`, a pure function of the step.
    Returns (mean train loss, gradient norm before clipping); non-finite values mean the
    update was skipped.
    """
    t = cfg.training
    for group in optimizer.param_groups:
        group["lr"] = lr
    rng = np.random.default_rng([t.seed, step])
    loss_sum = torch.zeros((), device=device)
    for _ in range(t.grad_accum_steps):
        x, y = get_batch(data, t.batch_size, cfg.model.context_length, device, generator=rng)
        with autocast_context(device, t.autocast):
            loss = cross_entropy(forward(x), y)
        (loss / t.grad_accum_steps).backward()
        loss_sum += loss.detach()
    grad_norm = clip_gradients(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf)
    train_loss, grad_norm = (loss_sum / t.grad_accum_steps).item(), grad_norm.item()
    if math.isfinite(train_loss) and math.isfinite(grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return train_loss, grad_norm


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train `cfg.model` on `cfg.data` as configured; see the module docstring for the run folder.

    Missing token arrays are built first (`prepare_data`). Stops early, with a checkpoint, on
    Ctrl-C / SIGTERM or when `training.time_budget_s` is spent; stops without saving the bad
    state on a non-finite loss (`diverged=True`). `progress=False` silences the console.
    """
    t = cfg.training
    say = tqdm.write if progress else (lambda *_: None)
    device = resolve_device(t.device)
    run_dir = _prepare_run_dir(cfg)
    prepare_data(cfg.data, cfg.model.vocab_size, progress=progress)
    train_data = _load_split(cfg.data.train_tokens, cfg.data.token_dtype, cfg.model.vocab_size)
    val_data = _load_split(cfg.data.val_tokens, cfg.data.token_dtype, cfg.model.vocab_size)

    if device.type == "cuda":
        enable_tf32()
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    model = TransformerLM.from_config(cfg.model, device=device)
    optimizer = _build_optimizer(model, cfg)
    total_steps, tokens_per_step = cfg.total_steps, cfg.tokens_per_step
    start_step, elapsed_before, best_val, kept_rows = 0, 0.0, None, []

    if t.resume and list_checkpoints(run_dir):
        start_step, elapsed_before, best_val, kept_rows = _resume(run_dir, cfg, model, optimizer)
        say(f"resuming {run_dir} from step {start_step}")
    elif t.resume:
        say(f"--resume: no checkpoint in {run_dir / 'checkpoints'}; starting from scratch")

    # The saved config describes the run, not how this process was started.
    saved_cfg = replace(cfg, training=replace(t, resume=False, overwrite=False))
    with atomic_write(run_dir / "config.toml", "w") as f:
        f.write(to_toml(saved_cfg))
    wandb_run = None
    if cfg.logging.wandb:
        wandb_run = start_wandb(
            cfg.logging.wandb_project,
            cfg.logging.wandb_mode,
            t.run_name,
            run_dir,
            config_to_dict(cfg),
            resume=start_step > 0,
        )
    logger = MetricsLogger(run_dir, kept_rows, console=progress, wandb_run=wandb_run)
    forward = torch.compile(model) if t.compile else model
    params = [p for p in model.parameters() if p.requires_grad]

    start_time = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - start_time

    def evaluate() -> float:
        return estimate_loss(
            forward,
            val_data,
            t.batch_size,
            cfg.model.context_length,
            t.eval_batches,
            device,
            seed=t.seed,
            autocast=t.autocast,
        )

    def checkpoint(step: int) -> None:
        extra = {
            "config": config_to_dict(saved_cfg),
            "elapsed_s": elapsed(),
            "best_val_loss": best_val,
            "torch_rng": torch.get_rng_state(),
        }
        save_checkpoint(model, optimizer, step, checkpoint_path(run_dir, step), extra=extra)
        _prune_checkpoints(run_dir, t.keep_last)

    say(
        f"training {run_dir.name}: {sum(p.numel() for p in params):,} parameters on {device}, "
        f"{total_steps:,} steps x {tokens_per_step:,} tokens"
    )
    if start_step == 0:
        val = evaluate()
        best_val = val
        logger.log(
            {
                "step": 0,
                "tokens": 0,
                "time_s": elapsed(),
                "lr": None,
                "train_loss": None,
                "val_loss": val,
                "val_perplexity": perplexity(val),
                "grad_norm": None,
                "tokens_per_s": None,
            }
        )

    diverged = interrupted = out_of_time = False
    step, last_saved = start_step, start_step
    window_tokens, window_time = 0, 0.0  # training throughput since the last logged row
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        unit="step",
        desc=t.run_name,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        with _stop_on_signals() as stop_requested:
            while step < total_steps:
                tick = time.perf_counter()
                lr = _lr_at(cfg, step + 1, total_steps)
                train_loss, grad_norm = _train_step(
                    forward, optimizer, params, train_data, cfg, step + 1, lr, device
                )
                if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                    diverged = True
                    logger.log(
                        {
                            "step": step + 1,
                            "tokens": (step + 1) * tokens_per_step,
                            "time_s": elapsed(),
                            "lr": lr,
                            "train_loss": train_loss,
                            "val_loss": None,
                            "grad_norm": grad_norm,
                        }
                    )
                    kept = (
                        f"the last good checkpoint (step {last_saved}) is kept"
                        if last_saved
                        else "no checkpoint was saved"
                    )
                    say(
                        f"step {step + 1}: the loss is {train_loss} (gradient norm {grad_norm}); the run has "
                        f"diverged and stops here ({kept}). Lower optim.lr or raise schedule.warmup_iters."
                    )
                    break
                step += 1
                bar.update()
                window_tokens += tokens_per_step
                window_time += time.perf_counter() - tick

                out_of_time = t.time_budget_s is not None and elapsed() >= t.time_budget_s
                last = step == total_steps or out_of_time or stop_requested.is_set()
                row = None
                if step % t.log_interval == 0 or step % t.eval_interval == 0 or last:
                    row = {
                        "step": step,
                        "tokens": step * tokens_per_step,
                        "time_s": elapsed(),
                        "lr": lr,
                        "train_loss": train_loss,
                        "val_loss": None,
                        "val_perplexity": None,
                        "grad_norm": grad_norm,
                        "tokens_per_s": window_tokens / max(window_time, 1e-9),
                    }
                    window_tokens, window_time = 0, 0.0
                if step % t.eval_interval == 0 or (last and not stop_requested.is_set()):
                    row["val_loss"] = val = evaluate()
                    row["val_perplexity"] = perplexity(val)
                    best_val = val if best_val is None else min(best_val, val)
                if row is not None:
                    logger.log(row)
                    bar.set_postfix(
                        loss=f"{train_loss:.3f}", best_val=f"{best_val:.3f}", lr=f"{lr:.1e}"
                    )
                if step % t.checkpoint_interval == 0 or last:
                    checkpoint(step)
                    last_saved = step
                if stop_requested.is_set():
                    interrupted = True
                    say(f"stopped at step {step}; checkpoint saved. Continue with --resume.")
                    break
                if out_of_time:
                    say(
                        f"time budget of {t.time_budget_s:g}s spent at step {step}; stopping (checkpoint saved)."
                    )
                    break
    finally:
        bar.close()
        logger.close()
        if logger.rows:
            plot_curves(
                {t.run_name: logger.rows}, run_dir / "loss_curve.png", title=f"{t.run_name}: loss"
            )

    val_losses = [r["val_loss"] for r in logger.rows if r.get("val_loss") is not None]
    return TrainResult(
        run_dir=run_dir,
        steps=step,
        tokens_seen=step * tokens_per_step,
        seconds=elapsed(),
        final_val_loss=val_losses[-1] if val_losses else None,
        best_val_loss=best_val,
        diverged=diverged,
        metrics=logger.rows,
        interrupted=interrupted,
    )


def load_trained_model(
    checkpoint_or_run_dir: str | Path, device: str | torch.device | None = None
) -> tuple[TransformerLM, TrainConfig]:
    """The model of a checkpoint (or of the newest checkpoint in a run folder), in eval mode,
    built from the config stored in the checkpoint; returns (model, config)."""
    path = Path(checkpoint_or_run_dir)
    if path.is_dir():
        found = list_checkpoints(path) or sorted(path.glob("step_*.pt"))
        if not found:
            raise FileNotFoundError(
                f"no checkpoint (checkpoints/step_*.pt) in {path}; train a model first"
            )
        path = found[-1]
    ckpt = read_checkpoint(path)
    if "config" not in ckpt["extra"]:
        raise ValueError(
            f"{path} holds no training config (not written by train()); build the model yourself "
            "and use cs336_basics.load_checkpoint"
        )
    cfg = config_from_dict(ckpt["extra"]["config"])
    device = resolve_device("auto") if device is None else torch.device(device)
    model = TransformerLM.from_config(cfg.model, device=device)
    load_checkpoint(ckpt, model)
    return model.eval(), cfg
