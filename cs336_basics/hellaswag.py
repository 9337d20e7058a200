"""HellaSwag: pick the ending a language model finds most likely after the context.

Each ending is scored by its mean per-token loss given the context (lower wins), the usual
zero-shot rule for small LMs; a per-byte variant (total loss / UTF-8 bytes of the ending, what
lm-eval calls acc_norm) is reported too because it does not favour endings that happen to
tokenize into many cheap tokens.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm


@dataclass
class Example:
    context: str
    endings: list[str]
    label: int


def _parse(record: dict) -> Example:
    """Original HellaSwag (`ctx`, `endings`, `label`) or OLMES (`query`, `choices`, `gold`)."""
    for ctx, endings, label in (("ctx", "endings", "label"), ("query", "choices", "gold")):
        if all(k in record for k in (ctx, endings, label)):
            return Example(record[ctx], list(record[endings]), int(record[label]))
    raise ValueError(
        f"expected keys ctx/endings/label (HellaSwag) or query/choices/gold (OLMES); got {sorted(record)}"
    )


def load_examples(path: str | os.PathLike, limit: int | None = None) -> list[Example]:
    """Read a HellaSwag jsonl file (the first `limit` examples if given)."""
    examples = []
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if limit is not None and len(examples) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    ex = _parse(json.loads(line))
                except (json.JSONDecodeError, ValueError, TypeError) as e:
                    raise ValueError(f"{path}:{line_no}: {e}") from None
                if len(ex.endings) < 2 or not 0 <= ex.label < len(ex.endings):
                    raise ValueError(
                        f"{path}:{line_no}: need >= 2 endings and a label indexing them"
                    )
                examples.append(ex)
    except FileNotFoundError:
        raise FileNotFoundError(f"HellaSwag file not found: {path}") from None
    if not examples:
        raise ValueError(f"{path} holds no examples")
    if len({len(ex.endings) for ex in examples}) > 1:
        raise ValueError(f"{path}: examples have different numbers of endings")
    return examples


def join_ending(ending: str) -> str:
    """The text appended to the context: endings follow it after one space."""
    return ending if ending[:1].isspace() else " " + ending


def scored_sequence(
    context_ids: list[int], ending_ids: list[int], context_length: int
) -> tuple[list[int], int]:
    """Context + ending, cut from the left to `context_length + 1` tokens, and how many of its
    last tokens are ending tokens the model predicts (the first kept token is never predicted)."""
    ids = (context_ids + ending_ids)[-(context_length + 1) :]
    return ids, min(len(ending_ids), len(ids) - 1)


@torch.inference_mode()
def sequence_losses(
    model: torch.nn.Module,
    sequences: list[tuple[list[int], int]],
    batch_size: int,
    progress: bool = False,
) -> Float[Tensor, " n"]:
    """Summed next-token loss (nats) over the last `n_scored` targets of each `(ids, n_scored)`.

    Sequences are right-padded to the batch's longest; causal attention keeps padding from
    affecting earlier positions, and padded targets are masked out.
    """
    device = next(model.parameters()).device
    totals = []
    for start in tqdm(range(0, len(sequences), batch_size), desc="scoring", disable=not progress):
        batch = sequences[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch) - 1
        x = torch.zeros(len(batch), width, dtype=torch.long)
        y = torch.zeros(len(batch), width, dtype=torch.long)
        scored = torch.zeros(len(batch), width, dtype=torch.bool)
        for row, (ids, n_scored) in enumerate(batch):
            n = len(ids) - 1
            x[row, :n] = torch.tensor(ids[:-1])
            y[row, :n] = torch.tensor(ids[1:])
            scored[row, n - n_scored : n] = True
        logits = model(x.to(device)).float()
        y, scored = y.to(device), scored.to(device)
        nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        totals.append((nll * scored).sum(-1).cpu())
    return torch.cat(totals)


@dataclass
class HellaSwagScores:
    """Per-ending figures, shape (examples, endings), and the gold labels."""

    loss_sum: Float[Tensor, "examples endings"]
    num_tokens: Int[Tensor, "examples endings"]
    num_bytes: Int[Tensor, "examples endings"]
    labels: Int[Tensor, " examples"]

    def accuracy(self) -> float:
        """Fraction of examples whose gold ending has the lowest mean token loss."""
        return (self.loss_sum / self.num_tokens).argmin(-1).eq(self.labels).float().mean().item()

    def accuracy_per_byte(self) -> float:
        """Same, ranking by loss per UTF-8 byte of the ending."""
        return (self.loss_sum / self.num_bytes).argmin(-1).eq(self.labels).float().mean().item()


def score_examples(
    model: torch.nn.Module,
    encode: Callable[[str], list[int]],
    examples: list[Example],
    context_length: int,
    batch_size: int = 32,
    progress: bool = True,
) -> HellaSwagScores:
    """Score every ending of every example with `model` (in eval mode, on any device)."""
    sequences, n_bytes = [], []
    for ex in examples:
        context_ids = encode(ex.context)
        for ending in ex.endings:
            text = join_ending(ending)
            ids, n_scored = scored_sequence(context_ids, encode(text), context_length)
            if n_scored == 0:
                raise ValueError(
                    f"nothing to score for ending {ending!r}: it encodes to no tokens, "
                    "or the context is empty and the ending is a single token"
                )
            sequences.append((ids, n_scored))
            n_bytes.append(len(text.encode("utf-8")))
    shape = (len(examples), len(examples[0].endings))
    return HellaSwagScores(
        loss_sum=sequence_losses(model, sequences, batch_size, progress).view(shape),
        num_tokens=torch.tensor([n for _, n in sequences]).view(shape),
        num_bytes=torch.tensor(n_bytes).view(shape),
        labels=torch.tensor([ex.label for ex in examples]),
    )
