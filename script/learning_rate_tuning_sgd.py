"""The handout's SGD toy: minimize mean(w**2) for a 10x10 w with the decaying SGD at several rates.

Prints each learning rate's loss trajectory and whether it decays or diverges.
    uv run python script/learning_rate_tuning_sgd.py [--lrs 1e1 1e2 1e3] [--steps 10] [--seed 0]
"""

import argparse
import math

import torch

from cs336_basics import SGD


def loss_trajectory(lr: float, steps: int, seed: int) -> list[float]:
    """Loss before each of `steps` SGD updates of w = 5 * randn(10, 10), loss = mean(w**2)."""
    torch.manual_seed(seed)
    weights = torch.nn.Parameter(5 * torch.randn((10, 10)))
    optimizer = SGD([weights], lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (weights**2).mean()
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    return losses


def verdict(losses: list[float]) -> str:
    if not math.isfinite(losses[-1]) or losses[-1] > losses[0]:
        return "diverges"
    return "decays" if losses[-1] < losses[0] else "flat"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=[1e1, 1e2, 1e3],
        help="learning rates to try (default: 1e1 1e2 1e3)",
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="SGD steps per learning rate (default: 10)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch seed for the initial weights, the same for every rate (default: 0)",
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    print(
        "SGD with step lr/sqrt(t+1) on mean(w**2), w = 5*randn(10, 10), "
        f"{args.steps} steps, seed {args.seed}"
    )
    summary = []
    for lr in args.lrs:
        losses = loss_trajectory(lr, args.steps, args.seed)
        summary.append((lr, losses[0], losses[-1], verdict(losses)))
        print(f"\nlr = {lr:g}")
        for t, loss in enumerate(losses):
            print(f"  step {t:3d}  loss {loss:.4g}")
    print("\n| lr | first loss | last loss | behaviour |\n|---|---|---|---|")
    for lr, first, last, behaviour in summary:
        print(f"| {lr:g} | {first:.4g} | {last:.4g} | {behaviour} |")


if __name__ == "__main__":
    main()
