"""Markdown tables for experiment and benchmark summaries."""


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
