"""The training loop: data -> model -> optimizer steps, with evaluation, logs, checkpoints and
resume, in one process or data-parallel across several (`distributed.py`).

`train(cfg)` = `Trainer(cfg)` (setup: check everything, then build) + `.fit()` (the loop) +
the `TrainResult` summary. The run folder's layout is in `run_folder.py`.

Reproducibility: the batch of step s is drawn from `np.random.default_rng([seed, s])`, so the
data order needs no sampler state, and a resumed run (model, optimizer, schedule, logs restored
from the checkpoint) reproduces the uninterrupted run exactly on CPU, at any world size.

Host syncs: the step itself never waits for the device. Losses, gradient norms and a
"first non-finite step" marker stay on the device and are read only at the steps that log,
evaluate or save, which is also where divergence is caught (before any checkpoint is saved).
"""

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cs336_basics.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from cs336_basics.config import TrainConfig, config_from_dict, config_to_dict, to_toml
from cs336_basics.data import check_token_range, load_tokens, sample_starts, windows
from cs336_basics.fileio import atomic_write
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.nn.transformer import TransformerLM, auto_attention
from cs336_basics.optim import (
    SGD,
    AdamW,
    Muon,
    clip_gradients,
    get_lr_cosine_schedule,
    get_lr_wsd_schedule,
    group_parameters,
)
from cs336_basics.training import distributed
from cs336_basics.training.device import autocast_context, enable_tf32, resolve_device
from cs336_basics.training.device import describe as describe_device
from cs336_basics.training.evaluation import estimate_loss
from cs336_basics.training.logging import MetricsLogger, metrics_row, read_metrics, start_wandb
from cs336_basics.training.plots import plot_curves
from cs336_basics.training.prepare import check_vocab_size, prepare_data
from cs336_basics.training.run_folder import RunFolder, find_checkpoint
from cs336_basics.training.signals import StopSignals


@dataclass
class TrainResult:
    """What a run did, read from its metric rows (the one summary every caller uses)."""

    run_dir: Path
    steps: int  # optimizer steps completed
    tokens_seen: int
    seconds: float  # wall-clock time of the whole run, resumed segments included
    final_val_loss: float | None
    best_val_loss: float | None
    initial_val_loss: float | None
    full_val_loss: float | None = None  # on the whole validation set, at the end of a budgeted run
    diverged: bool = False  # stopped on a NaN/inf loss or gradient
    stop_signal: int | None = None  # the signal that stopped it (a checkpoint was saved)
    metrics: list[dict] = field(default_factory=list)  # every logged row, from step 0

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C / SIGTERM (a checkpoint was saved)."""
        return self.stop_signal is not None

    @classmethod
    def from_rows(cls, run_dir: str | Path, rows: list[dict], **known) -> "TrainResult":
        """The summary of metric rows; `known` overrides what the rows cannot tell (the steps
        completed by a run that diverged after its last good row, how it stopped)."""
        val = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
        last = rows[-1] if rows else {"step": 0, "tokens": 0, "time_s": 0.0}
        values = dict(
            run_dir=Path(run_dir),
            steps=last["step"],
            tokens_seen=last["tokens"],
            seconds=last["time_s"],
            final_val_loss=val[-1] if val else None,
            best_val_loss=min(val) if val else None,
            initial_val_loss=val[0] if val else None,
            full_val_loss=next(
                (r["full_val_loss"] for r in reversed(rows) if "full_val_loss" in r), None
            ),
            metrics=rows,
        )
        return cls(**{**values, **known})

    def summary(self) -> str:
        """One line: steps, tokens and the validation loss from first to last (and best)."""
        text = f"{self.steps:,} steps, {self.tokens_seen:,} tokens"
        if self.final_val_loss is not None:
            text += (
                f"; validation loss {self.initial_val_loss:.3f} -> {self.final_val_loss:.3f} "
                f"(best {self.best_val_loss:.3f})"
            )
        if self.full_val_loss is not None:
            text += f"; whole validation set {self.full_val_loss:.4f}"
        return text


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer, each group at its peak learning rate (the schedule scales
    every group by the same factor). One group of everything for SGD, and for AdamW unless
    embeddings or head have learning rates of their own; Muon groups the parameters as
    `group_parameters` does (gains and norms without weight decay)."""
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return SGD(params, lr=o.lr)
    adamw = {"betas": o.betas, "eps": o.eps, "weight_decay": o.weight_decay}
    if o.name == "adamw" and o.embed_lr is None and o.head_lr is None:
        return AdamW(params, lr=o.lr, **adamw)
    groups = group_parameters(model)
    own = {"matrices": o.muon_lr if o.name == "muon" else None, "embeddings": o.embed_lr,
           "head": o.head_lr, "scalars": None}  # fmt: skip
    param_groups = []
    for kind, members in groups.items():
        if not members:
            continue
        group = {"params": members, "lr": o.lr if own[kind] is None else own[kind]}
        if o.name == "adamw":
            param_groups.append(group)
        elif kind == "matrices":
            param_groups.append({**group, "use_muon": True, "momentum": o.momentum,
                                 "weight_decay": o.weight_decay})  # fmt: skip
        else:
            decay = 0.0 if kind == "scalars" else o.weight_decay
            param_groups.append({**group, "use_muon": False, **adamw, "weight_decay": decay})
    return AdamW(param_groups, lr=o.lr, **adamw) if o.name == "adamw" else Muon(param_groups)


def lr_at(cfg: TrainConfig, step: int, total: float | None = None) -> float:
    """Learning rate (of the optim.lr group) at optimizer step `step` (1-based). cosine:
    warmup, then down to min_lr, reached exactly at the last step unless
    schedule.cosine_cycle_iters says otherwise; wsd: warmup, flat, then a linear decay over the
    last decay_fraction of the run. `total` is the run's length in steps when a time budget
    cuts it short (see `Trainer.expected_steps`). A warmup longer than the run is cut to it."""
    s, o = cfg.schedule, cfg.optim
    total = cfg.total_steps if total is None else total
    if s.name == "wsd":
        warmup = min(s.warmup_iters, total)
        decay = min(s.decay_fraction * total, total - warmup)
        return get_lr_wsd_schedule(step, o.lr, o.min_lr, warmup, decay, total)
    cycle = s.cosine_cycle_iters or total
    warmup = min(s.warmup_iters, cycle)
    return get_lr_cosine_schedule(step, o.lr, o.min_lr, warmup, cycle)


def _model_mismatch(saved: dict, wanted: dict) -> list[str]:
    """The model settings that differ (the attention kernel is free to change on resume)."""
    return [
        f"model.{k}: checkpoint {saved.get(k)!r}, config {v!r}"
        for k, v in wanted.items()
        if saved.get(k) != v and k != "attention"
    ]


def _load_split(path: str, dtype: str, vocab_size: int) -> np.ndarray:
    """Memory-map a token file (its dtype checked by `load_tokens`) and check every id fits."""
    tokens = load_tokens(path, None if dtype == "auto" else dtype)
    check_token_range(tokens, vocab_size)
    return tokens


class Trainer:
    """Setup: everything is checked (config, output folder, data, tokenizer, a checkpoint to
    resume) before anything in the run folder is deleted or written; then the model and
    optimizer are built or restored. `fit()` runs the loop and returns the summary."""

    def __init__(self, cfg: TrainConfig, progress: bool = True):
        t = cfg.training
        self.cfg, self.progress = cfg, progress
        self.dist, self.device = distributed.setup(resolve_device(t.device), t.parallel)
        self.say = tqdm.write if progress and self.dist.is_main else (lambda *_: None)
        if t.batch_size % self.dist.world_size:
            raise ValueError(
                f"training.batch_size {t.batch_size} does not split evenly over "
                f"{self.dist.world_size} ranks; use a multiple of {self.dist.world_size}"
            )
        self.folder = RunFolder(cfg.run_dir)
        resume = t.resume and bool(self.folder.checkpoints())
        if self.dist.is_main:
            self.folder.check_usable(t.resume, t.overwrite)
            check_vocab_size(cfg.data.tokenizer_dir, cfg.model.vocab_size)
            prepare_data(cfg.data, cfg.model.vocab_size, progress=progress)
        self.dist.barrier()  # the other ranks read the token files rank 0 may have built
        self.train_data = _load_split(
            cfg.data.train_tokens, cfg.data.token_dtype, cfg.model.vocab_size
        )
        self.val_data = _load_split(cfg.data.val_tokens, cfg.data.token_dtype, cfg.model.vocab_size)
        checkpoint = self._checkpoint_to_resume() if resume else None

        if self.device.type == "cuda":
            enable_tf32()
        if t.threads is not None:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.model = TransformerLM.from_config(cfg.model, device=self.device)
        self.step, self.elapsed_before, self.best_val, rows = 0, 0.0, None, []
        if checkpoint is not None:  # weights before any wrapping: FSDP shards them in place
            self.step = load_checkpoint(checkpoint, self.model)
        self.forward = self.dist.wrap(self.model, self.device)
        if t.compile:
            self.forward = torch.compile(self.forward)
        self.optimizer = build_optimizer(self.model, cfg)  # over the parameters as wrapped
        # Each group's peak learning rate comes from the config, also on resume.
        self.peak_lrs = [group["lr"] for group in self.optimizer.param_groups]
        if checkpoint is not None:
            rows = self._restore(checkpoint)
        elif t.resume:
            self.say(f"--resume: no checkpoint in {self.folder.checkpoint_dir}; starting afresh")
        # The saved config describes the run, not how this process was started.
        self.saved_cfg = replace(cfg, training=replace(t, resume=False, overwrite=False))
        self.rows, self.logger = rows, None
        if self.dist.is_main:
            self.logger = self._open_run_folder(rows, clear=checkpoint is None)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # 0 while every step so far was finite, else the first step that was not (on device).
        self.first_bad = torch.zeros((), dtype=torch.int64, device=self.device)
        self.stop: str | None = None  # why the loop ends early: signal, budget or diverged
        self.stop_signal: int | None = None
        self.seconds, self.told_budget = self.elapsed_before, False  # agreed elapsed time
        self.start_time = time.perf_counter()

    def _restore(self, checkpoint: dict) -> list[dict]:
        """Optimizer, RNG, clock and best loss from the checkpoint; returns the metric rows up
        to it (without a whole-validation row: that closed a segment this run continues)."""
        self.dist.load_optimizer_state(self.model, self.optimizer, checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["extra"]["torch_rng"])
        self.elapsed_before = checkpoint["extra"]["elapsed_s"]
        self.best_val = checkpoint["extra"]["best_val_loss"]
        self.say(f"resuming {self.folder.path} from step {self.step}")
        return [r for r in read_metrics(self.folder.metrics)
                if r["step"] <= self.step and "full_val_loss" not in r]  # fmt: skip

    def _open_run_folder(self, rows: list[dict], clear: bool) -> MetricsLogger:
        """The first writes to the run folder (all checks passed): clear an earlier run if
        asked, the resolved config, and the metrics log (with W&B when configured)."""
        t, log = self.cfg.training, self.cfg.logging
        self.folder.create(clear=clear)
        with atomic_write(self.folder.config, "w") as f:
            f.write(to_toml(self.saved_cfg))
        wandb_run = None
        if log.wandb:
            wandb_run = start_wandb(log.wandb_project, log.wandb_mode, t.run_name, self.folder.path,
                                    config_to_dict(self.cfg), resume=self.step > 0)  # fmt: skip
        return MetricsLogger(self.folder.path, rows, self.progress, wandb_run)

    def _checkpoint_to_resume(self) -> dict:
        checkpoint = self.folder.newest_readable_checkpoint()
        if checkpoint is None:
            raise ValueError(
                f"--resume: no checkpoint in {self.folder.checkpoint_dir} can be read (all are "
                "truncated or corrupt); start over with --training.overwrite true"
            )
        saved = checkpoint["extra"].get("config", {}).get("model", {})
        mismatch = _model_mismatch(saved, config_to_dict(self.cfg)["model"])
        if mismatch:
            raise ValueError(
                f"cannot resume from {checkpoint['path']}: it holds a different model shape\n  "
                + "\n  ".join(mismatch)
                + "\nUse the run's own config.toml, or start a new run."
            )
        return checkpoint

    # ------------------------------------------------------------ pieces of a step

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time

    def expected_steps(self) -> float:
        """The steps this run will make: all of them, or, under a time budget, as many as fit
        at the pace so far (all ranks agree on it: it comes from the agreed elapsed time). The
        schedule spans this many, so a run cut by its budget still ends fully decayed."""
        budget, total = self.cfg.training.time_budget_s, self.cfg.total_steps
        if budget is None or self.step == 0:
            return total
        return min(total, max(self.step + 1, self.step * budget / self.seconds))

    def train_step(self, step: int, lr: float) -> tuple[Tensor, Tensor]:
        """Forward/backward over `grad_accum_steps` micro-batches (this rank's rows of each),
        clip, update. The batches come from `np.random.default_rng([seed, step])`, a pure
        function of the step. Returns (mean train loss, gradient norm before clipping), both
        still on the device."""
        t = self.cfg.training
        scale = lr / self.cfg.optim.lr if self.cfg.optim.lr > 0 else 0.0
        for group, peak in zip(self.optimizer.param_groups, self.peak_lrs):
            group["lr"] = peak * scale
        rng = np.random.default_rng([t.seed, step])
        rows = self.dist.rows(t.batch_size)
        context = self.cfg.model.context_length
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(t.grad_accum_steps):
            starts = sample_starts(self.train_data, t.batch_size, context, rng)[rows]
            x, y = windows(self.train_data, starts, context, self.device)
            with self.dist.no_sync(self.forward, micro == t.grad_accum_steps - 1):
                with autocast_context(self.device, t.autocast):
                    loss = cross_entropy(self.forward(x), y)
                (loss / t.grad_accum_steps).backward()
            loss_sum += loss.detach()
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        grad_norm = distributed.plain(clip_gradients(self.params, clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_sum / t.grad_accum_steps
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm)) & (self.first_bad == 0)
        self.first_bad = torch.where(bad, step, self.first_bad)
        return loss, grad_norm

    def evaluate(self) -> float:
        t = self.cfg.training
        return estimate_loss(
            self.forward,
            self.val_data,
            t.batch_size,
            self.cfg.model.context_length,
            t.eval_batches,
            self.device,
            seed=t.seed,
            autocast=t.autocast,
            dist=self.dist,
        )

    def save(self) -> None:
        extra = {
            "config": config_to_dict(self.saved_cfg),
            "elapsed_s": self.elapsed(),
            "best_val_loss": self.best_val,
            "torch_rng": torch.get_rng_state(),
        }
        model_state, optimizer_state = self.dist.checkpoint_state(self.model, self.optimizer)
        if self.dist.is_main:
            path = self.folder.checkpoint_path(self.step)
            save_checkpoint(model_state, optimizer_state, self.step, path, extra=extra)
            self.folder.prune(self.cfg.training.keep_last)
        self.dist.barrier()  # no rank leaves (or exits) before the file is complete

    def log(self, row: dict) -> None:
        if self.logger is not None:
            self.logger.log(row)
        else:
            self.rows.append(row)

    # ------------------------------------------------------------ the loop

    def fit(self, signals: StopSignals | None = None) -> TrainResult:
        """Train to `total_steps`, stopping early, with a checkpoint, when `signals` reports
        Ctrl-C / SIGTERM or `training.time_budget_s` is spent, and without saving on a
        non-finite loss."""
        cfg, t = self.cfg, self.cfg.training
        params = sum(p.numel() for p in self.params)
        ranks = f" x {self.dist.world_size} ranks" if self.dist.enabled else ""
        attention = cfg.model.attention
        if attention == "auto":
            attention = auto_attention(self.device)
        self.say(
            f"training {t.run_name}: {params:,} parameters on "
            f"{describe_device(self.device, t.autocast, attention)}{ranks}, "
            f"{cfg.total_steps:,} steps x {cfg.tokens_per_step:,} tokens"
        )
        if self.step == 0:
            self.best_val = val = self.evaluate()
            self.log(self._row(val_loss=val))
        self.window = (time.perf_counter(), self.step)  # throughput since the last row
        bar = tqdm(
            total=cfg.total_steps,
            initial=self.step,
            unit="step",
            desc=t.run_name,
            disable=not (self.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        self.signals = signals or StopSignals()
        try:
            while self.stop is None and self.step < cfg.total_steps:
                lr = lr_at(cfg, self.step + 1, self.expected_steps())
                loss, grad_norm = self.train_step(self.step + 1, lr)
                self.step += 1
                bar.update()
                self._after_step(lr, loss, grad_norm, bar)
            if t.time_budget_s is not None and self.stop in (None, "budget"):
                self._validate_on_everything()
        finally:
            bar.close()
            if self.logger is not None:
                self.logger.close()
                if self.logger.rows:
                    title = f"{t.run_name}: loss"
                    plot_curves({t.run_name: self.logger.rows}, self.folder.loss_curve, title=title)
        return TrainResult.from_rows(
            self.folder.path,
            self.logger.rows if self.logger is not None else self.rows,
            steps=self.step,
            tokens_seen=self.step * cfg.tokens_per_step,
            diverged=self.stop == "diverged",
            stop_signal=self.stop_signal,
        )

    def _after_step(self, lr: float, loss: Tensor, grad_norm: Tensor, bar: tqdm) -> None:
        """Decide whether to stop; at steps that log, evaluate or save, read the values back,
        catch divergence, and do those."""
        t = self.cfg.training
        # Every rank stops on the same step: when any of them got a signal (which, by number)
        # or ran out of time.
        signum, self.seconds = self.dist.agree([self.signals.signum or 0, self.elapsed()])
        if signum:
            self.stop, self.stop_signal = "signal", int(signum)
        elif t.time_budget_s is not None and self.seconds >= t.time_budget_s:
            self.stop = "budget"
        last = self.stop is not None or self.step == self.cfg.total_steps
        evaluate = self.step % t.eval_interval == 0 or (last and self.stop != "signal")
        save = self.step % t.checkpoint_interval == 0 or last
        if not (self.step % t.log_interval == 0 or evaluate or save):
            return

        start, start_step = self.window
        measured = dict(
            lr=lr,
            train_loss=self.dist.mean(loss.detach().clone()).item(),
            grad_norm=grad_norm.item(),
            tokens_per_s=(self.step - start_step)
            * self.cfg.tokens_per_step
            / (time.perf_counter() - start),
        )
        first_bad = int(self.first_bad)
        if first_bad:
            self.log(self._row(**measured))
            self._report_divergence(first_bad, measured)
            return
        val = self.evaluate() if evaluate else None
        self.log(self._row(val_loss=val, **measured))
        if t.time_budget_s is not None and not self.told_budget:
            self.told_budget = True
            self.say(
                f"time budget {t.time_budget_s:g}s: at {self.step / self.seconds:.2f} steps/s "
                f"the run reaches about step {self.expected_steps():,.0f} of "
                f"{self.cfg.total_steps:,}; the learning-rate schedule is fitted to where it ends"
            )
        if val is not None:
            self.best_val = min(self.best_val, val)
        bar.set_postfix(loss=f"{measured['train_loss']:.3f}", best_val=f"{self.best_val:.3f}")
        if save:
            if self.stop == "signal":
                self.signals.saving()
            self.save()
        if self.stop == "budget":
            self.say(
                f"time budget of {t.time_budget_s:g}s spent at step {self.step}; "
                "stopping (checkpoint saved)."
            )
        self.window = (time.perf_counter(), self.step)

    def _validate_on_everything(self) -> None:
        """The loss on the whole validation set (what a leaderboard reports), logged as its
        own row: `full_val_loss` at the final step."""
        t = self.cfg.training
        context = self.cfg.model.context_length
        self.say(f"validating on the whole of {self.cfg.data.val_tokens} ...")
        trained_for = self.elapsed()  # the row keeps the run's time, not the validation's
        loss = estimate_loss(self.forward, self.val_data, t.batch_size, context, None,
                             self.device, autocast=t.autocast, dist=self.dist)  # fmt: skip
        self.log(metrics_row(self.step, self.step * self.cfg.tokens_per_step, trained_for,
                             full_val_loss=loss))  # fmt: skip

    def _row(self, **measured: float | None) -> dict:
        return metrics_row(
            self.step, self.step * self.cfg.tokens_per_step, self.elapsed(), **measured
        )

    def _report_divergence(self, first_bad: int, row: dict) -> None:
        saved = self.folder.checkpoints()
        kept = (
            f"the last good checkpoint ({saved[-1].name}) is kept"
            if saved
            else "no checkpoint was saved"
        )
        self.say(
            f"step {first_bad}: the loss or the gradient norm is not finite (at step "
            f"{self.step}: loss {row['train_loss']}, gradient norm {row['grad_norm']}); the run "
            f"has diverged and stops here ({kept}). Lower optim.lr or raise schedule.warmup_iters."
        )
        self.stop, self.step = "diverged", first_bad - 1


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train `cfg.model` on `cfg.data` as configured (see `Trainer`); `progress=False`
    silences the console. A signal before training starts raises `Interrupted`; during
    training it stops the run after the current step, with a checkpoint (see signals.py)."""
    with StopSignals() as signals:
        trainer = Trainer(cfg, progress)
        try:
            signals.defer()
            return trainer.fit(signals)
        except RuntimeError as e:
            failure = trainer.dist.peer_failure(e)
            if failure is None:
                raise
            raise failure from e
        finally:
            trainer.dist.shutdown()


def load_trained_model(
    checkpoint_or_run_dir: str | Path, device: str | torch.device | None = None
) -> tuple[TransformerLM, TrainConfig]:
    """The model of a checkpoint (or of the newest checkpoint in a run folder), in eval mode,
    built from the config stored in the checkpoint; returns (model, config)."""
    path = find_checkpoint(checkpoint_or_run_dir)
    checkpoint = read_checkpoint(path)
    if "config" not in checkpoint["extra"]:
        raise ValueError(
            f"{path} holds no training config (not written by train()); build the model "
            "yourself and use cs336_basics.load_checkpoint"
        )
    cfg = config_from_dict(checkpoint["extra"]["config"])
    device = resolve_device("auto") if device is None else torch.device(device)
    model = TransformerLM.from_config(cfg.model, device=device)
    load_checkpoint(checkpoint, model)
    return model.eval(), cfg
