"""The folder a training run lives in, and the one place that knows its layout.

out_dir/run_name/
    config.toml        the resolved config (loadable again with --config)
    metrics.jsonl      one JSON row per logged step
    loss_curve.png     train/validation loss vs steps and vs wall-clock time
    samples.txt        stories generated at the end (script/train.py)
    checkpoints/       step_XXXXXXXX.pt, the newest `keep_last` kept
"""

import os
import shutil
import warnings
from pathlib import Path

from cs336_basics.checkpoint import CorruptCheckpointError, read_checkpoint


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoint_dir = self.path / "checkpoints"
        self.config = self.path / "config.toml"
        self.metrics = self.path / "metrics.jsonl"
        self.loss_curve = self.path / "loss_curve.png"
        self.samples = self.path / "samples.txt"

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step_{step:08d}.pt"

    def checkpoints(self) -> list[Path]:
        """The run's checkpoints, oldest first."""
        return sorted(self.checkpoint_dir.glob("step_*.pt"))

    def holds_a_run(self) -> bool:
        return bool(self.checkpoints()) or self.metrics.exists()

    def check_usable(self, resume: bool, overwrite: bool) -> None:
        """Raise, touching nothing, unless the folder can be created and written, and a run
        already in it is either continued (`resume`) or may be replaced (`overwrite`)."""
        existing = next((p for p in [self.path, *self.path.parents] if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise NotADirectoryError(
                f"cannot create the run folder {self.path}: {existing} is a file, not a directory. "
                "Choose another --training.out_dir."
            )
        if existing is not None and not os.access(existing, os.W_OK):
            raise PermissionError(
                f"cannot create the run folder {self.path}: {existing} is not writable. "
                "Choose a writable --training.out_dir."
            )
        if self.holds_a_run() and not resume and not overwrite:
            raise FileExistsError(
                f"{self.path} already holds a run. Continue it with --resume, start over there "
                "with --training.overwrite true (deletes it), or pick another --training.run_name."
            )

    def create(self, clear: bool) -> None:
        """Make the folder; with `clear`, delete an earlier run's checkpoints and metrics first."""
        if clear:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            self.metrics.unlink(missing_ok=True)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def prune(self, keep_last: int) -> None:
        for old in self.checkpoints()[:-keep_last]:
            old.unlink(missing_ok=True)

    def newest_readable_checkpoint(self) -> dict | None:
        """The newest checkpoint that reads back, as a dict from `read_checkpoint`; a newer one
        that is truncated or corrupt is skipped with a warning (the previous kept one is used)."""
        for path in reversed(self.checkpoints()):
            try:
                checkpoint = read_checkpoint(path)
            except CorruptCheckpointError as e:
                warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
                continue
            checkpoint["path"] = str(path)
            return checkpoint
        return None


def find_checkpoint(checkpoint_or_run_dir: str | os.PathLike) -> Path:
    """A checkpoint file as given, or the newest checkpoint of a run folder."""
    path = Path(checkpoint_or_run_dir)
    if not path.is_dir():
        return path
    found = RunFolder(path).checkpoints() or sorted(path.glob("step_*.pt"))
    if not found:
        raise FileNotFoundError(
            f"no checkpoint (checkpoints/step_*.pt) in {path}; train a model first"
        )
    return found[-1]
