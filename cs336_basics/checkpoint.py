"""Checkpoints: model and optimizer state, the iteration, and extra state, in one torch.save file.

A checkpoint is a dict (see `read_checkpoint`):
    "model":     the model's state_dict, keys as the plain (uncompiled) module names them
    "optimizer": the optimizer's state_dict, or None
    "iteration": int
    "extra":     dict of whatever else a resume needs (config, RNG states, data position)

Files are read with `torch.load(weights_only=True)`, which never runs code from the file. So
`extra` may only hold tensors, Python scalars/str/bytes, None, torch dtypes/devices, and
dicts/lists/tuples of those; `save_checkpoint` checks this up front. RNG states fit as they
come: `torch.get_rng_state()` and `torch.Generator.get_state()` are tensors, a numpy
`Generator.bit_generator.state` is a dict of ints, `random.getstate()` a tuple of ints.
"""

import os
import pickle
from collections.abc import Mapping
from typing import IO, Any, BinaryIO

import torch

from cs336_basics.fileio import atomic_write

Source = str | os.PathLike | BinaryIO | IO[bytes]

_COMPILE_PREFIX = "_orig_mod."  # torch.compile's wrapper keeps the real module under this name
_SAFE_LEAVES = (type(None), bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)
_MAX_LISTED = 10


class CorruptCheckpointError(ValueError):
    """A checkpoint file that exists but cannot be read back."""


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)


def _check_safe(value: Any, where: str) -> None:
    """Raise TypeError if `value` would not load under weights_only=True."""
    if isinstance(value, (dict, list, tuple)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict):
                _check_safe(key, f"a key of {where}")
            _check_safe(item, f"{where}[{key!r}]")
    elif not isinstance(value, _SAFE_LEAVES):
        raise TypeError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a checkpoint "
            "cannot hold (it is loaded with weights_only=True); store it as a tensor, list, dict "
            "or Python scalar instead (e.g. ndarray.tolist(), str(path))"
        )


def save_checkpoint(
    model: torch.nn.Module | Mapping[str, Any],
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None,
    iteration: int,
    out: Source,
    extra: dict | None = None,
) -> None:
    """Write model, optimizer, iteration and `extra` to `out` (a path or a binary file object).

    A path is written atomically: readers, and a crash midway, see the previous file or the
    complete new one. A `torch.compile`d model is saved under its plain module's keys. A state
    dict may stand in for the model or the optimizer (sharded training gathers the whole
    state from its ranks first).
    """
    extra = {} if extra is None else extra
    _check_safe(extra, "extra")
    if isinstance(model, torch.nn.Module):
        model = _unwrap(model).state_dict()
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.state_dict()
    checkpoint = {
        "model": model,
        "optimizer": optimizer,
        "iteration": int(iteration),
        "extra": extra,
    }
    if isinstance(out, (str, os.PathLike)):
        with atomic_write(out) as f:
            torch.save(checkpoint, f)
    else:
        torch.save(checkpoint, out)


def read_checkpoint(src: Source) -> dict:
    """Load a checkpoint dict ("model", "optimizer", "iteration", "extra") onto the CPU.

    No model needed: this is how a resume gets the saved config and RNG states first. The
    result can be passed to `load_checkpoint` in place of the file, to avoid reading it twice.
    """
    name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "the checkpoint stream"
    if isinstance(src, (str, os.PathLike)) and not os.path.isfile(src):
        raise FileNotFoundError(f"checkpoint {name} does not exist")
    try:
        checkpoint = torch.load(src, map_location="cpu", weights_only=True)
    except PermissionError as e:
        raise PermissionError(f"cannot read checkpoint {name}: {e.strerror}") from e
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        # A file cut short (a full disk, a copy that stopped) fails in any of these ways,
        # some of them (OSError EINVAL from a seek) naming neither the file nor the cause.
        raise CorruptCheckpointError(
            f"checkpoint {name} is truncated or corrupt (or was not written by torch.save): {e}"
        ) from e
    if not isinstance(checkpoint, dict) or not {"model", "iteration"} <= checkpoint.keys():
        raise ValueError(
            f"{name} is not a checkpoint written by save_checkpoint (no model state or iteration)"
        )
    return checkpoint


def _listed(lines: list[str]) -> str:
    more = f"\n    ... and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
    return "".join(f"\n    {line}" for line in lines[:_MAX_LISTED]) + more


def _check_fits(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise a ValueError naming every key whose presence or shape differs from the model's."""
    expected = model.state_dict()
    problems = []
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = [f"{k}: model {tuple(v.shape)}" for k, v in expected.items() if k not in state]
    unexpected = [
        f"{k}: checkpoint {tuple(v.shape)}" for k, v in state.items() if k not in expected
    ]
    for title, lines in (
        ("shape mismatch", mismatched),
        ("missing from checkpoint", missing),
        ("unexpected in checkpoint", unexpected),
    ):
        if lines:
            problems.append(f"  {len(lines)} {title}:{_listed(lines)}")
    if problems:
        raise ValueError(
            "checkpoint does not fit this model (was it saved from a different config?):\n"
            + "\n".join(problems)
        )


def load_checkpoint(
    src: Source | dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> int:
    """Restore `model` (and `optimizer`, if given) from `src`; return the saved iteration.

    `src` is a path, a binary file object, or a dict from `read_checkpoint`. Tensors are copied
    into the model's own parameters, on whatever device they live. Keys saved from a
    `torch.compile`d model load into a plain one and vice versa.
    """
    checkpoint = src if isinstance(src, dict) else read_checkpoint(src)
    state = {k.removeprefix(_COMPILE_PREFIX): v for k, v in checkpoint["model"].items()}
    model = _unwrap(model)
    _check_fits(model, state)
    model.load_state_dict(state)
    if optimizer is not None:
        if checkpoint.get("optimizer") is None:
            raise ValueError(
                "the checkpoint holds no optimizer state; "
                "pass optimizer=None to load the model only"
            )
        optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["iteration"]
