"""Muon vs AdamW on the same small LM: validation loss after the same steps, at the same lrs.

A byte-level model (vocab 256: no tokenizer to train) on a text file, trained with each
optimizer at each learning rate from the same initial weights on the same batches, under the
same warmup-stable-decay schedule. Muon runs the blocks' matrices with Muon and the rest
(embeddings, head, norm gains) with AdamW, every group at the one lr given: Muon's update
scale matches AdamW's update RMS, so the AdamW lr is meant to carry over. Prints and writes a
markdown table (final validation loss, median step time) to bench/results/muon.md.
"""

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cs336_basics.data import get_batch
from cs336_basics.markdown import markdown_table, publish
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.nn.transformer import TransformerLM
from cs336_basics.optim import AdamW, Muon, clip_gradients, get_lr_wsd_schedule, group_parameters

BETAS, WEIGHT_DECAY = (0.9, 0.95), 0.1


def build_optimizer(name: str, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW on everything, or Muon on the blocks' matrices; no decay on norm gains in both."""
    groups = group_parameters(model)
    adamw = {"lr": lr, "betas": BETAS}
    decayed = groups["embeddings"] + groups["head"]
    if name == "adamw":
        return AdamW(
            [
                {"params": groups["matrices"] + decayed, "weight_decay": WEIGHT_DECAY},
                {"params": groups["scalars"], "weight_decay": 0.0},
            ],
            **adamw,
        )
    return Muon(
        [
            {
                "params": groups["matrices"],
                "use_muon": True,
                "lr": lr,
                "weight_decay": WEIGHT_DECAY,
            },
            {"params": decayed, "use_muon": False, "weight_decay": WEIGHT_DECAY} | adamw,
            {"params": groups["scalars"], "use_muon": False, "weight_decay": 0.0} | adamw,
        ]
    )


def run(name: str, lr: float, train: np.ndarray, val: np.ndarray, args) -> tuple[float, float]:
    """Train one model; return (validation loss at the end, median seconds per step)."""
    torch.manual_seed(0)
    model = TransformerLM(
        256, args.context, args.d_model, args.num_layers, args.num_heads, None, 10000.0
    )
    opt = build_optimizer(name, model, lr)
    warmup, decay = args.steps // 10, args.steps // 5
    times = []
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = get_lr_wsd_schedule(step, lr, 0.1 * lr, warmup, decay, args.steps)
        x, y = get_batch(train, args.batch_size, args.context, "cpu", np.random.default_rng(step))
        loss = cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        rng = np.random.default_rng(-1 % 2**32)
        losses = [
            cross_entropy(model(x), y).item()
            for x, y in (
                get_batch(val, args.batch_size, args.context, "cpu", rng) for _ in range(16)
            )
        ]
    return statistics.fmean(losses), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--text", type=Path, required=True, help="UTF-8 training text")
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=[1e-3, 3e-3, 1e-2],
        help="peak lrs (default: 1e-3 3e-3 1e-2)",
    )
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (default: 300)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences (default: 16)")
    parser.add_argument(
        "--context", type=int, default=128, help="bytes per sequence (default: 128)"
    )
    parser.add_argument("--d-model", type=int, default=128, help="model width (default: 128)")
    parser.add_argument("--num-layers", type=int, default=4, help="blocks (default: 4)")
    parser.add_argument("--num-heads", type=int, default=4, help="heads (default: 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/muon.md"), help="markdown output"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = np.frombuffer(args.text.read_bytes(), dtype=np.uint8)
    cut = int(0.9 * len(data))
    train, val = data[:cut], data[cut:]
    load_before = os.getloadavg()[0]
    rows = []
    for lr in args.lrs:
        results = {name: run(name, lr, train, val, args) for name in ("adamw", "muon")}
        (adamw_loss, adamw_s), (muon_loss, muon_s) = results["adamw"], results["muon"]
        rows.append(
            [f"{lr:g}", f"{adamw_loss:.4f}", f"{muon_loss:.4f}", f"{muon_loss - adamw_loss:+.4f}",
             f"{adamw_s * 1e3:.0f}", f"{muon_s * 1e3:.0f}"]
        )  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)
    table = "\n".join(
        [
            f"Muon vs AdamW: byte-level LM (d_model {args.d_model}, {args.num_layers} layers, "
            f"{args.num_heads} heads, context {args.context}) on {args.text.name} "
            f"({len(train):,} train / {len(val):,} validation bytes), batch {args.batch_size}, "
            f"{args.steps} steps, WSD schedule (warmup 10%, decay over the last 20% to 0.1 lr), "
            f"weight decay {WEIGHT_DECAY} (none on norm gains), clip 1.0, "
            f"{args.threads} thread(s), torch {torch.__version__}, {platform.machine()} with "
            f"{os.cpu_count()} CPUs, load average (1 min) {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after. Validation loss (nats/byte) is the mean over 16 "
            "fixed batches after the last step; same init and batches for both optimizers "
            "(the losses repeat exactly from run to run). Step times are wall-clock medians on "
            "a shared machine, run after run rather than interleaved: for orientation only.",
            "",
            markdown_table(
                ["peak lr", "AdamW val loss", "Muon val loss", "Muon - AdamW", "AdamW ms/step",
                 "Muon ms/step"],
                rows,
            ),
        ]
    )  # fmt: skip
    publish(table, args.out)


if __name__ == "__main__":
    main()
