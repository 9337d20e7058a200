"""Training-run configuration: dataclass sections, TOML presets, dotted command-line overrides.

A config is built in three layers, each overriding the one before: the dataclass defaults,
a TOML preset (`configs/*.toml`, one table per section), and overrides such as
`model.d_model=512` or `--optim.lr 1e-3`. Every value is type-checked on the way in; unknown
keys and impossible values raise `ValueError` naming the key.
"""

import argparse
import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cs336_basics.nn.transformer import ModelConfig


def _opt(default: Any, help: str) -> Any:
    """A dataclass field with its `--help` text (mutable defaults are copied per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    """Where the token arrays come from, and how to build them when they are missing."""

    train_tokens: str | None = _opt(
        None,
        "training token ids: .npy, or a raw .bin (set token_dtype); built from train_text if missing",
    )
    val_tokens: str | None = _opt(
        None, "validation token ids, same format; built from val_text if missing"
    )
    token_dtype: Literal["auto", "uint16", "uint32", "int32", "int64"] = _opt(
        "auto", "dtype of a raw .bin token file (.npy files carry their own)"
    )
    tokenizer_dir: str | None = _opt(
        None, "folder with vocab.json + merges.txt (trained on train_text if missing)"
    )
    special_tokens: list[str] = _opt(
        ["<|endoftext|>"], "special tokens of the tokenizer, comma-separated"
    )
    train_text: str | None = _opt(
        None, "raw UTF-8 text to build the tokenizer and train_tokens from, if missing"
    )
    val_text: str | None = _opt(None, "raw UTF-8 text to build val_tokens from, if missing")
    max_text_bytes: int | None = _opt(
        None, "use only this prefix of train_text (cut after a whole document)"
    )
    max_val_text_bytes: int | None = _opt(None, "use only this prefix of val_text")
    demo_corpus: bool = _opt(
        False, "write the built-in generated stories to train_text/val_text if missing"
    )
    demo_corpus_bytes: int = _opt(
        6_000_000, "size of the generated training text (validation: 5%% of it)"
    )


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd", "muon"] = _opt(
        "adamw",
        "optimizer; muon: Muon for the blocks' matrices, AdamW for embeddings, head and gains",
    )
    lr: float = _opt(1e-3, "peak learning rate (of every group that has none of its own)")
    min_lr: float = _opt(
        1e-4, "learning rate at the end of the schedule (other groups: the same fraction of theirs)"
    )
    muon_lr: float | None = _opt(None, "muon: peak learning rate of the matrices; unset: lr")
    embed_lr: float | None = _opt(
        None, "peak learning rate of the token (and value) embeddings; unset: lr"
    )
    head_lr: float | None = _opt(None, "peak learning rate of an untied lm_head; unset: lr")
    momentum: float = _opt(0.95, "muon: momentum of the matrices (Nesterov)")
    betas: tuple[float, float] = _opt((0.9, 0.95), "AdamW moment decay rates, comma-separated")
    eps: float = _opt(1e-8, "AdamW denominator epsilon")
    weight_decay: float = _opt(0.1, "decoupled weight decay (muon: not on gains and norms)")
    grad_clip: float = _opt(1.0, "max global L2 norm of the gradients; 0 turns clipping off")


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "wsd"] = _opt(
        "cosine",
        "cosine: warmup then cosine decay to optim.min_lr; wsd: warmup, flat at the peak, then "
        "a linear decay to optim.min_lr over the last decay_fraction of the run",
    )
    warmup_iters: int = _opt(100, "steps of linear warmup from 0 to optim.lr")
    cosine_cycle_iters: int | None = _opt(
        None, "cosine: step at which it reaches optim.min_lr; unset: the last step"
    )
    decay_fraction: float = _opt(0.2, "wsd: fraction of the run spent decaying")


@dataclass
class TrainingConfig:
    max_steps: int | None = _opt(None, "optimizer steps; unset: derived from total_tokens")
    total_tokens: int | None = _opt(
        None, "training tokens = steps x batch_size x grad_accum_steps x context_length"
    )
    batch_size: int = _opt(
        32, "sequences per micro-batch, over all ranks (each of N ranks takes batch_size / N)"
    )
    grad_accum_steps: int = _opt(1, "micro-batches per optimizer step")
    device: Literal["auto", "cpu", "cuda", "mps"] = _opt("auto", "auto picks cuda > mps > cpu")
    autocast: Literal["auto", "bf16", "none"] = _opt(
        "auto", "auto: bf16 autocast on CUDA, fp32 elsewhere"
    )
    compile: bool = _opt(False, "torch.compile the model")
    threads: int | None = _opt(
        None,
        "CPU threads for torch; unset: torch's choice, one per core; "
        "1 is faster on a CPU shared with other jobs",
    )
    seed: int = _opt(0, "seeds the model init and the data order")
    eval_interval: int = _opt(100, "steps between validation-loss estimates")
    eval_batches: int = _opt(20, "validation batches per estimate (a fixed sample)")
    log_interval: int = _opt(10, "steps between metric rows")
    checkpoint_interval: int = _opt(
        500, "steps between checkpoints (one is always written at the end)"
    )
    keep_last: int = _opt(2, "checkpoints kept in the run folder")
    run_name: str = _opt("run", "the run lives in out_dir/run_name")
    out_dir: str = _opt("runs", "parent folder of runs")
    resume: bool = _opt(False, "continue from the newest checkpoint in the run folder")
    overwrite: bool = _opt(
        False, "start afresh in a run folder that holds an earlier run (deletes it)"
    )
    time_budget_s: float | None = _opt(
        None, "stop, with a checkpoint, after this much training time (seconds)"
    )
    parallel: Literal["ddp", "fsdp"] = _opt(
        "ddp",
        "with several ranks (torchrun): ddp keeps a whole model per rank and averages "
        "gradients; fsdp (FSDP2) shards parameters, gradients and optimizer state",
    )


@dataclass
class LoggingConfig:
    wandb: bool = _opt(False, "also log to Weights & Biases")
    wandb_project: str = _opt("cs336-basics", "W&B project")
    wandb_mode: Literal["online", "offline"] = _opt(
        "offline", "offline needs no account or network (wandb sync later)"
    )


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(**MODEL_DEFAULTS))
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def tokens_per_step(self) -> int:
        t = self.training
        return t.batch_size * t.grad_accum_steps * self.model.context_length

    @property
    def total_steps(self) -> int:
        """`training.max_steps` if set, else `total_tokens` rounded up to whole steps."""
        if self.training.max_steps is not None:
            return self.training.max_steps
        return math.ceil(self.training.total_tokens / self.tokens_per_step)

    @property
    def run_dir(self) -> Path:
        return Path(self.training.out_dir) / self.training.run_name


# A small model used when neither a preset nor an override gives the model's shape.
MODEL_DEFAULTS = dict(
    vocab_size=2048,
    context_length=128,
    d_model=128,
    num_layers=4,
    num_heads=4,
    d_ff=384,
    rope_theta=10000.0,
)

SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


# ---------------------------------------------------------------- type checking


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`, converting CLI strings; raise naming `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(key, value, arg)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):  # from the command line: comma-separated
            value = [v.strip() for v in value.split(",")] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list; got {value!r}")
        if origin is tuple:
            if len(value) != len(args):
                raise ValueError(f"{key} must have {len(args)} items; got {list(value)!r}")
            return tuple(_convert(key, v, a) for v, a in zip(value, args))
        return [_convert(key, v, args[0]) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{key} must be true or false; got {value!r}")
    if tp is int:
        if isinstance(value, str):
            try:
                value = int(value.replace("_", ""))
            except ValueError:
                raise ValueError(f"{key} must be an integer; got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{key} must be a number; got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string; got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported config type {tp}")


def _check_keys(name: str, values: Mapping[str, Any]) -> None:
    names = [f.name for f in dataclasses.fields(SECTIONS[name])]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"unknown config key {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"the [{name}] section has: {', '.join(names)}"
        )


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    _check_keys(name, values)
    kwargs = {k: _convert(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a required field left out, or the section's own checks
        raise ValueError(f"[{name}] section: {e}") from None


def _validate(cfg: TrainConfig) -> None:
    """Reject values that type-check but cannot work, naming the key (ModelConfig checks its own)."""
    t, o, s = cfg.training, cfg.optim, cfg.schedule
    positive = {
        "training.batch_size": t.batch_size,
        "training.grad_accum_steps": t.grad_accum_steps,
        "training.eval_interval": t.eval_interval,
        "training.eval_batches": t.eval_batches,
        "training.log_interval": t.log_interval,
        "training.checkpoint_interval": t.checkpoint_interval,
        "training.keep_last": t.keep_last,
        "optim.eps": o.eps,
    }
    optional_positive = {
        "training.max_steps": t.max_steps,
        "training.total_tokens": t.total_tokens,
        "training.time_budget_s": t.time_budget_s,
        "training.threads": t.threads,
        "schedule.cosine_cycle_iters": s.cosine_cycle_iters,
        "data.max_text_bytes": cfg.data.max_text_bytes,
        "data.max_val_text_bytes": cfg.data.max_val_text_bytes,
        "data.demo_corpus_bytes": cfg.data.demo_corpus_bytes,
    }
    for key, v in {
        **positive,
        **{k: v for k, v in optional_positive.items() if v is not None},
    }.items():
        if not v > 0:
            raise ValueError(f"{key} must be positive; got {v}")
    for key, v in {
        "optim.lr": o.lr,
        "optim.min_lr": o.min_lr,
        "optim.weight_decay": o.weight_decay,
        "optim.grad_clip": o.grad_clip,
        "schedule.warmup_iters": s.warmup_iters,
    }.items():
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{key} must be a finite number >= 0; got {v}")
    if o.min_lr > o.lr:
        raise ValueError(f"optim.min_lr ({o.min_lr}) must not exceed optim.lr ({o.lr})")
    for key, v in {"optim.muon_lr": o.muon_lr, "optim.embed_lr": o.embed_lr,
                   "optim.head_lr": o.head_lr}.items():  # fmt: skip
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{key} must be a finite number >= 0; got {v}")
    if not 0 <= o.momentum < 1:
        raise ValueError(f"optim.momentum must lie in [0, 1); got {o.momentum}")
    if not 0 < s.decay_fraction <= 1:
        raise ValueError(f"schedule.decay_fraction must lie in (0, 1]; got {s.decay_fraction}")
    if not all(0 <= b < 1 for b in o.betas):
        raise ValueError(f"optim.betas must lie in [0, 1); got {o.betas}")
    if t.max_steps is None and t.total_tokens is None:
        raise ValueError("set training.max_steps or training.total_tokens")
    if not t.run_name or Path(t.run_name).name != t.run_name:
        raise ValueError(f"training.run_name must be a plain folder name; got {t.run_name!r}")
    if cfg.data.demo_corpus and not (cfg.data.train_text and cfg.data.val_text):
        raise ValueError(
            "data.demo_corpus needs data.train_text and data.val_text (where to write the stories)"
        )


# ---------------------------------------------------------------- loading


def _nest(overrides: Sequence[str] | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`["model.d_model=512", "--optim.lr", "1e-3"]` or `{"model.d_model": 512}` -> nested dict."""
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs, items = [], list(overrides)
        while items:
            item = items.pop(0).removeprefix("--")
            if "=" in item:
                key, value = item.split("=", 1)
            elif items:
                key, value = item, items.pop(0)
            else:
                raise ValueError(f"override {item!r} has no value; write {item}=VALUE")
            pairs.append((key, value))
    nested: dict[str, dict[str, Any]] = {}
    for key, value in pairs:
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ValueError(
                f"unknown config key {key!r}; keys look like SECTION.NAME with SECTION in {', '.join(SECTIONS)}"
            )
        nested.setdefault(section, {})[name.replace("-", "_")] = value
    return nested


def read_preset(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse a TOML preset into `{section: {key: value}}`, with clear errors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config file {path} not found; presets live in configs/") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from None
    for section, values in doc.items():
        if section not in SECTIONS:
            raise ValueError(
                f"{path}: unknown section [{section}]; sections are {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ValueError(f"{path}: {section} must be a [table]")
        try:
            _check_keys(section, values)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return doc


def load_config(
    preset_path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> TrainConfig:
    """Defaults, then the TOML preset (if any), then dotted overrides; type-checked and validated."""
    layers = [{"model": dict(MODEL_DEFAULTS)}]
    if preset_path is not None:
        layers.append(read_preset(preset_path))
    layers.append(_nest(overrides))
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            merged[section].update(values)
    cfg = TrainConfig(
        **{name: _build_section(name, SECTIONS[name], merged[name]) for name in SECTIONS}
    )
    _validate(cfg)
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dict (tuples as lists, None kept) for JSON, TOML-ish display and checkpoints."""

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return {
        name: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, name)).items()}
        for name in SECTIONS
    }


def _flatten(d: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {f"{section}.{k}": v for section, values in d.items() for k, v in values.items()}


def config_from_dict(d: Mapping[str, Mapping[str, Any]]) -> TrainConfig:
    """Inverse of `config_to_dict` (used for configs stored in checkpoints)."""
    return load_config(None, {k: v for k, v in _flatten(d).items() if v is not None})


def with_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """A new, validated config: `cfg` with dotted-key `overrides` (`{"optim.lr": 1e-3}`)."""
    return load_config(None, {**_flatten(config_to_dict(cfg)), **overrides})


def short_run_overrides(
    cfg: TrainConfig, steps: int, batch_size: int | None = None
) -> dict[str, Any]:
    """Make `cfg` a `steps`-step run whose schedule, evaluations and logs fit that length:
    warmup at most 10% of it, about 10 validation points, a checkpoint only at the end.

    With `batch_size`, the run also changes its batch size; the warmup then keeps its token
    count, and the validation sample (batch size x batches) stays the same windows."""
    t = cfg.training
    scale = 1 if batch_size is None else t.batch_size / batch_size
    overrides = {
        "training.max_steps": steps,
        "training.total_tokens": None,
        "training.eval_interval": max(1, steps // 10),
        "training.log_interval": max(1, steps // 50),
        "training.checkpoint_interval": steps,
        "training.keep_last": 1,
        "schedule.warmup_iters": min(int(cfg.schedule.warmup_iters * scale), steps // 10),
        "schedule.cosine_cycle_iters": None,
    }
    if batch_size is not None:
        overrides["training.batch_size"] = batch_size
        overrides["training.eval_batches"] = max(1, int(t.eval_batches * scale))
    return overrides


def to_toml(cfg: TrainConfig) -> str:
    """The resolved config as a TOML preset (unset optional values are left out)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    lines = []
    for section, values in config_to_dict(cfg).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {fmt(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def add_config_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """One `--section.key VALUE` option per config field, its help showing the current default.

    Options are added with `default=argparse.SUPPRESS`, so the parsed namespace holds only the
    keys given on the command line; pass them to `load_config` via `overrides_from_args`.
    """
    for section, values in config_to_dict(defaults).items():
        group = parser.add_argument_group(f"[{section}]")
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        hints = typing.get_type_hints(SECTIONS[section])
        for key, value in values.items():
            text = fields[key].metadata["help"]
            if typing.get_origin(hints[key]) is Literal:
                text += f"; one of {', '.join(typing.get_args(hints[key]))}"
            shown = (
                "unset"
                if value is None
                else ",".join(map(str, value))
                if isinstance(value, list)
                else value
            )
            group.add_argument(
                f"--{section}.{key}",
                dest=f"{section}.{key}",
                default=argparse.SUPPRESS,
                metavar="VALUE",
                help=f"{text} (default: {shown})",
            )


def overrides_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The `--section.key` options actually given, as a dotted-key dict for `load_config`."""
    return {k: v for k, v in vars(args).items() if "." in k and k.split(".", 1)[0] in SECTIONS}
