"""One AdamW step on a Transformer LM's parameters: ours vs torch.optim.AdamW, fused and not.

Peers, timed interleaved in the same process on the same parameters and gradients:
  - ours: cs336_basics.AdamW (torch._foreach_* ops; on CPU over cache-sized slices of the list)
  - torch fused: torch.optim.AdamW(fused=True), one C++/CUDA kernel doing the whole update of
    each element in one pass (the peer: the fastest AdamW torch has)
  - torch foreach: torch.optim.AdamW(foreach=True)
  - torch loop: torch.optim.AdamW(foreach=False) (its per-parameter path)
  - handout loop: the handout's algorithm as a plain Python loop over parameters
and, for information (a different algorithm, not a peer), Muon: cs336_basics.optim.Muon on
the blocks' matrices (momentum + 5 bf16 Newton-Schulz steps) with AdamW on the rest.
Default shapes: the handout's TinyStories model (vocab 10,000, d_model 512, 4 layers,
d_ff 1344, untied embeddings), about 22.7M parameters. Prints a markdown table of median step
times, wall-clock and CPU (process) time, with ratios to torch fused, for each thread count,
and writes it to bench/results/adamw.md. On a shared machine the CPU time of the 1-thread run
is the steadier figure.
"""

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from cs336_basics.markdown import markdown_table, publish
from cs336_basics.nn.transformer import TransformerLM
from cs336_basics.optim import AdamW, Muon, group_parameters

BASELINE = "torch fused"

WHY_FUSED_IS_FASTER = """
Why torch fused is faster: it is one C++ kernel that reads p, g, m, v and writes p, m, v
once per element (7 memory accesses). Ours is seven foreach passes (m lerp; v *= beta2;
v += (1 - beta2) g^2; decay; sqrt(v); + eps; p addcdiv), 18 accesses per element. Cutting the
parameter list into cache-sized slices keeps those passes in cache, which is why ours beats
torch foreach and torch loop, but each pass is still its own loop over the slice. Fewer passes
need a fused kernel (hand-written C++ or Triton, or torch.compile of the update); the optimizer
stays plain tensor code instead, and torch's own kernel (torch._fused_adamw_) is torch.optim's
code, which the from-scratch rule leaves out.
""".strip()


class HandoutLoopAdamW(torch.optim.Optimizer):
    """The handout's AdamW pseudo-code, one parameter at a time (the baseline foreach replaces)."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t, m, v = state["t"], state["m"], state["v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                alpha_t = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-alpha_t)
                p.mul_(1 - lr * group["weight_decay"])


def time_peers(
    peers: dict[str, torch.optim.Optimizer], repeats: int, warmup: int, device: str
) -> dict:
    """Median (wall, CPU) seconds of one step per peer, the peers taking turns step by step."""

    def timed_step(opt: torch.optim.Optimizer) -> tuple[float, float]:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    for opt in peers.values():
        for _ in range(warmup):
            opt.step()
    times = {name: [] for name in peers}
    for _ in range(repeats):
        for name, opt in peers.items():
            times[name].append(timed_step(opt))
    return {name: [statistics.median(column) for column in zip(*t)] for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--vocab-size", type=int, default=10_000, help="vocabulary size (default: 10000)"
    )
    parser.add_argument("--d-model", type=int, default=512, help="model width (default: 512)")
    parser.add_argument("--num-layers", type=int, default=4, help="Transformer blocks (default: 4)")
    parser.add_argument("--d-ff", type=int, default=1344, help="feed-forward width (default: 1344)")
    parser.add_argument(
        "--num-heads",
        type=int,
        default=16,
        help="attention heads, must divide d_model (default: 16)",
    )
    parser.add_argument(
        "--repeats", type=int, default=15, help="timed steps per peer (default: 15)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps per peer first (default: 3)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, torch.get_num_threads()],
        help=f"torch intra-op thread counts, one table each (default: 1 {torch.get_num_threads()})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/adamw.md"),
        help="markdown output (default: bench/results/adamw.md)",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    model = TransformerLM(
        args.vocab_size, 16, args.d_model, args.num_layers, args.num_heads, args.d_ff, 10000.0,
        device=args.device,
    )  # fmt: skip
    params = list(model.parameters())
    for p in params:
        p.grad = 1e-3 * torch.randn_like(p)
    hyper = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    groups = group_parameters(model)
    muon_groups = [
        {"params": groups["matrices"], "use_muon": True, "lr": 1e-3, "weight_decay": 0.1},
        {"params": groups["embeddings"] + groups["head"] + groups["scalars"], "use_muon": False}
        | hyper,
    ]
    # All peers update the same tensors: values drift between steps, the work does not.
    peers = {
        "ours": AdamW(params, **hyper),
        "torch fused": torch.optim.AdamW(params, fused=True, **hyper),
        "torch foreach": torch.optim.AdamW(params, foreach=True, **hyper),
        "torch loop": torch.optim.AdamW(params, foreach=False, **hyper),
        "handout loop": HandoutLoopAdamW(params, **hyper),
        "Muon + AdamW (information)": Muon(muon_groups),
    }

    n = sum(p.numel() for p in params)
    n_muon = sum(p.numel() for p in groups["matrices"])
    shape = f"vocab {args.vocab_size}, d_model {args.d_model}, {args.num_layers} layers"
    machine = f"{platform.machine()} with {os.cpu_count()} CPUs"
    load_before = os.getloadavg()[0]
    lines = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        medians = time_peers(peers, args.repeats, args.warmup, args.device)
        base_wall, base_cpu = medians[BASELINE]
        table = markdown_table(
            ["optimizer", "wall (ms)", f"vs {BASELINE}", "CPU time (ms)", f"vs {BASELINE}"],
            [
                [name, f"{wall * 1e3:.1f}", f"{wall / base_wall:.2f}x", f"{cpu * 1e3:.1f}",
                 f"{cpu / base_cpu:.2f}x"]
                for name, (wall, cpu) in medians.items()
            ],
        )  # fmt: skip
        lines += ["", f"{threads} thread(s):", "", table]
    header = (
        f"AdamW step on {n / 1e6:.1f}M parameters in {len(params)} tensors ({shape}, "
        f"d_ff {args.d_ff}), float32, {args.device}, torch {torch.__version__}, {machine}, "
        f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"median of {args.repeats} interleaved steps. Muon orthogonalizes {n_muon / 1e6:.1f}M "
        "of the parameters (the blocks' matrices) and runs AdamW on the rest."
    )
    lines.insert(0, header)
    lines += ["", WHY_FUSED_IS_FASTER]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
