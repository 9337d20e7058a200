"""Loss curves as PNG: one panel against training tokens, one against wall-clock time."""

import math
import os
import statistics

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: works on a headless machine
import matplotlib.pyplot as plt  # noqa: E402

from cs336_basics.fileio import atomic_write  # noqa: E402


def _points(rows: list[dict], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    pts = [
        (r[x_key], r[y_key]) for r in rows if r.get(y_key) is not None and math.isfinite(r[y_key])
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(series: dict[str, list[dict]], out_png: str | os.PathLike, title: str = "") -> None:
    """Plot validation loss (solid, dots) and training loss (faint) of each labelled run.

    `series` maps a label to that run's metric rows (dicts with `tokens`, `time_s`,
    `train_loss`, `val_loss`; missing or non-finite values are skipped). Tokens, not steps,
    so that runs with different batch sizes share an axis. A single run is shown whole; with
    several, the y-axis tops out at the typical run's upper-quartile validation loss (the median
    over runs): a comparison is about the later three quarters of the runs, which the first
    fall from ~ln(vocab), or a diverged run, would flatten.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    upper_quartiles, lowest, highest = [], math.inf, -math.inf
    for i, (label, rows) in enumerate(series.items()):
        color = f"C{i % 10}"
        for ax, x_key in zip(axes, ("tokens", "time_s")):
            ax.plot(*_points(rows, x_key, "train_loss"), color=color, alpha=0.3, linewidth=1)
            xs, ys = _points(rows, x_key, "val_loss")
            ax.plot(xs, ys, color=color, marker=".", label=label)
        val_losses = _points(rows, "tokens", "val_loss")[1]
        if val_losses:
            upper_quartiles.append(float(np.percentile(val_losses, 75)))
            lowest, highest = min(lowest, *val_losses), max(highest, *val_losses)
    if upper_quartiles:
        lo, hi = lowest, highest if len(series) == 1 else statistics.median(upper_quartiles)
        axes[0].set_ylim(lo - 0.05 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    axes[0].set(xlabel="training tokens", ylabel="loss (nats/token)")
    axes[1].set(xlabel="wall-clock time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(title="validation (solid), train (faint)", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
