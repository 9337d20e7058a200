"""Markdown tables for experiment and benchmark summaries, and writing such a summary out."""

import os
from pathlib import Path

from cs336_basics.fileio import atomic_write


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub table: first column left-aligned, the rest right-aligned; floats get 2 decimals.

    Pass pre-formatted strings for any other precision.
    """

    def cell(c) -> str:
        return f"{c:.2f}" if isinstance(c, float) else str(c)

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def publish(text: str, path: str | os.PathLike | None) -> None:
    """Print a report and, when `path` is given, write it there atomically (one final newline)."""
    text = text.rstrip("\n") + "\n"
    print("\n" + text)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"written to {path}")
