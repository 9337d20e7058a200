"""Where metric rows go: a JSON-lines file in the run folder, the console, and optionally W&B."""

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cs336_basics.fileio import atomic_write
from cs336_basics.nn.functional import perplexity


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a `metrics.jsonl` file ([] if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metrics_row(
    step: int,
    tokens: int,
    time_s: float,
    *,
    lr: float | None = None,
    train_loss: float | None = None,
    val_loss: float | None = None,
    grad_norm: float | None = None,
    tokens_per_s: float | None = None,
    **extra: float | str | None,
) -> dict:
    """One row of `metrics.jsonl`: every key present in every row (None when not measured at
    this step), validation perplexity derived from the loss, and any `extra` keys last."""
    return {
        "step": step,
        "tokens": tokens,
        "time_s": time_s,
        "lr": lr,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_perplexity": None if val_loss is None else perplexity(val_loss),
        "grad_norm": grad_norm,
        "tokens_per_s": tokens_per_s,
        **extra,
    }


def format_row(row: dict) -> str:
    """One console line: `step 100 | 409,600 tok | 12.3s | lr 1.0e-03 | train 3.21 | val 3.30 (ppl 27.1) | ...`."""
    parts = [f"step {row['step']:>6}", f"{row['tokens']:,} tok", f"{row['time_s']:.1f}s"]
    if row.get("lr") is not None:
        parts.append(f"lr {row['lr']:.2e}")
    if row.get("train_loss") is not None:
        parts.append(f"train {row['train_loss']:.4f}")
    if row.get("val_loss") is not None:
        parts.append(f"val {row['val_loss']:.4f} (ppl {row['val_perplexity']:.2f})")
    if row.get("full_val_loss") is not None:
        parts.append(f"whole validation set {row['full_val_loss']:.4f}")
    if row.get("grad_norm") is not None:
        parts.append(f"|g| {row['grad_norm']:.3f}")
    if row.get("tokens_per_s"):
        parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
    return " | ".join(parts)


class MetricsLogger:
    """Append each row to `metrics.jsonl`, echo it to the console, and send it to W&B if enabled.

    `rows` are the rows already in the file that are kept (those up to a resumed step); the
    file is rewritten with exactly those first, so a resumed run's log continues seamlessly.
    """

    def __init__(self, run_dir: Path, rows: list[dict], console: bool, wandb_run: Any = None):
        self.path = run_dir / "metrics.jsonl"
        self.rows = list(rows)
        self.console = console
        self.wandb_run = wandb_run
        with atomic_write(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.rows)
        self._file = open(self.path, "a")

    def log(self, row: dict) -> None:
        row = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()
        }
        self.rows.append(row)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self.console:
            tqdm.write(format_row(row))
        if self.wandb_run is not None:
            self.wandb_run.log(
                {k: v for k, v in row.items() if v is not None and k != "step"}, step=row["step"]
            )

    def close(self) -> None:
        self._file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def start_wandb(
    project: str, mode: str, run_name: str, run_dir: Path, config: dict, resume: bool
) -> Any:
    """A W&B run (imported only when asked for). Offline mode needs no account or network;
    its files land in `run_dir/wandb` (upload later with `wandb sync`). A resumed run
    continues the W&B run whose id is kept in `run_dir/wandb_id`."""
    try:
        import wandb
    except ImportError as e:
        raise RuntimeError(
            "logging.wandb is on but the wandb package is not installed (uv add wandb)"
        ) from e
    os.environ.setdefault("WANDB_SILENT", "true")
    id_file = run_dir / "wandb_id"
    if not (resume and id_file.exists()):
        with atomic_write(id_file, "w") as f:
            f.write(secrets.token_hex(4))
    try:
        return wandb.init(
            project=project,
            name=run_name,
            id=id_file.read_text().strip(),
            resume="allow",
            mode=mode,
            dir=str(run_dir),
            config=config,
        )
    except Exception as e:  # wandb raises many types (auth, network); all mean the same to the user
        raise RuntimeError(
            f"could not start Weights & Biases in {mode} mode: {e}. Use --logging.wandb_mode offline "
            "(no account or network needed) or run `wandb login`."
        ) from e
