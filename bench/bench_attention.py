"""Causal attention forward + backward on a GPU: our Triton kernel against torch's SDPA.

Peers, timed interleaved in one process on the same bf16 tensors (batch, heads, seq, d):
  - triton: cs336_basics.nn.flash_attention.flash_attention (autotuned at its first call)
  - sdpa: F.scaled_dot_product_attention(is_causal=True), flash backend forced
  - scratch: cs336_basics.nn.functional.causal_attention (the from-scratch PyTorch path)
Shapes are GPT-2 small's attention (12 heads of 64) at T = 256, 1024, 4096, with the batch
chosen so that every T holds the same number of tokens (16,384). Prints a markdown table of
median times over CUDA events (forward, and forward + backward), the ratios to SDPA, our
TFLOP/s, peak memory, and each peer's largest difference from SDPA's output and gradients;
writes it to bench/results/attention.md. Target: triton forward + backward <= 1.5x SDPA at
T = 1024. About half a minute on an H100/H200, most of it compiling the autotuned kernels.

    python bench/bench_attention.py            # needs a CUDA GPU
    python bench/bench_attention.py --smoke    # tiny correctness check; on CPU through
                                               # Triton's interpreter (no GPU needed)
"""

import argparse
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cs336_basics.markdown import publish
from cs336_basics.nn.flash_attention import flash_attention, flash_attention_available
from cs336_basics.nn.functional import causal_attention


def sdpa(q, k, v):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


PEERS = {"triton": flash_attention, "sdpa": sdpa, "scratch": causal_attention}


def forward_backward(attention: Callable, q, k, v, grad) -> list[torch.Tensor]:
    out = attention(q, k, v)
    return [out, *torch.autograd.grad(out, (q, k, v), grad)]


def cuda_ms(fn: Callable) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def peak_mib(fn: Callable) -> float:
    """Memory fn allocates at its peak beyond what is allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def max_diff(results: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(results, expected))


def measure(seq: int, batch: int, heads: int, head_dim: int, repeats: int, warmup: int) -> dict:
    """Medians per peer: forward ms, forward+backward ms, peak MiB, max |diff| from SDPA."""
    generator = torch.Generator(device="cuda").manual_seed(seq)
    q, k, v, grad = (
        torch.randn(batch, heads, seq, head_dim, device="cuda", generator=generator).bfloat16()
        for _ in range(4)
    )
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    expected = forward_backward(sdpa, q, k, v, grad)
    stats = {name: {"fwd": [], "fwd_bwd": []} for name in PEERS}
    for name, attention in PEERS.items():
        for _ in range(warmup):  # the first triton call autotunes
            forward_backward(attention, q, k, v, grad)
        stats[name]["diff"] = max_diff(forward_backward(attention, q, k, v, grad), expected)
        stats[name]["mib"] = peak_mib(lambda a=attention: forward_backward(a, q, k, v, grad))
    for _ in range(repeats):
        for name, attention in PEERS.items():
            with torch.no_grad():
                stats[name]["fwd"].append(cuda_ms(lambda a=attention: a(q, k, v)))
            stats[name]["fwd_bwd"].append(
                cuda_ms(lambda a=attention: forward_backward(a, q, k, v, grad))
            )
    for peer in stats.values():
        peer["fwd"], peer["fwd_bwd"] = map(statistics.median, (peer["fwd"], peer["fwd_bwd"]))
    return stats


def tuned_configs() -> str:
    """The configs the autotuner picked at the last call of each kernel."""
    from cs336_basics.nn import flash_attention_kernels as kernels

    picks = []
    for name, tuned in [
        ("forward", kernels._forward),
        ("dq", kernels._backward_dq),
        ("dk/dv", kernels._backward_dkdv),
    ]:
        c = tuned.best_config
        block_m, block_n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        picks.append(f"{name} {block_m}x{block_n} w{c.num_warps} s{c.num_stages}")
    return ", ".join(picks)


def smoke() -> None:
    """Our kernel against SDPA and scratch at tiny shapes, forward and backward, bf16 and fp32."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # before the kernels are first imported
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if not flash_attention_available(device):
        raise SystemExit(f"the Triton kernel cannot run on {device} (TRITON_INTERPRET=0?)")
    for dtype, tolerance in [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)]:
        generator = torch.Generator().manual_seed(0)
        q, k, v, grad = (
            torch.randn(1, 2, 40, 32, generator=generator).to(device, dtype) for _ in range(4)
        )
        q, k, v = (x.requires_grad_() for x in (q, k, v))

        def reference(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        ours = forward_backward(flash_attention, q, k, v, grad)
        for name, peer in [("sdpa", reference), ("scratch", causal_attention)]:
            diff = max_diff(ours, forward_backward(peer, q, k, v, grad))
            print(
                f"{dtype} on {device}: max |triton - {name}| = {diff:.2e} (tolerance {tolerance})"
            )
            if diff > tolerance:
                raise SystemExit("FAILED")
    print("smoke test passed")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seq-lens",
        type=int,
        nargs="+",
        default=[256, 1024, 4096],
        help="(default: 256 1024 4096)",
    )
    parser.add_argument(
        "--tokens", type=int, default=16_384, help="batch x seq for every T (default: 16384)"
    )
    parser.add_argument("--heads", type=int, default=12, help="(default: 12)")
    parser.add_argument("--head-dim", type=int, default=64, help="(default: 64)")
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed calls per peer (default: 20)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: 2)")
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny correctness check instead (CPU: interpreter)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/attention.md"),
        help="markdown output (default: bench/results/attention.md)",
    )
    args = parser.parse_args()
    if args.smoke:
        return smoke()
    if not torch.cuda.is_available():
        raise SystemExit(
            "bench_attention.py times CUDA kernels and needs a CUDA GPU; without one, "
            "--smoke checks the kernel's results on CPU through Triton's interpreter"
        )
    torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer sets it (scratch's products)

    load_before = os.getloadavg()[0]
    rows, picks, target = [], [], "T = 1024 not measured"
    for seq in args.seq_lens:
        batch = max(1, args.tokens // seq)
        s = measure(seq, batch, args.heads, args.head_dim, args.repeats, args.warmup)
        triton, ref, scratch = s["triton"], s["sdpa"], s["scratch"]
        flops = 7 * batch * args.heads * seq**2 * args.head_dim  # causal: fwd 2, bwd 5 T^2 d
        rows.append(
            f"| {seq} | {batch} | {triton['fwd']:.3f} | {ref['fwd']:.3f} "
            f"| {triton['fwd'] / ref['fwd']:.2f}x | {triton['fwd_bwd']:.3f} | {ref['fwd_bwd']:.3f} "
            f"| **{triton['fwd_bwd'] / ref['fwd_bwd']:.2f}x** "
            f"| {flops / triton['fwd_bwd'] / 1e9:.0f} / {flops / ref['fwd_bwd'] / 1e9:.0f} "
            f"| {scratch['fwd_bwd']:.2f} ({scratch['fwd_bwd'] / ref['fwd_bwd']:.1f}x) "
            f"| {triton['mib']:.0f} / {ref['mib']:.0f} / {scratch['mib']:.0f} "
            f"| {triton['diff']:.1e} / {scratch['diff']:.1e} |"
        )
        picks.append(f"T={seq}: {tuned_configs()}")
        if seq == 1024:
            ratio = triton["fwd_bwd"] / ref["fwd_bwd"]
            target = f"{ratio:.2f}x at T = 1024: {'met' if ratio <= 1.5 else 'NOT met'}"
        print(rows[-1], flush=True)

    import triton

    device = torch.cuda.get_device_name()
    lines = [
        f"Causal attention, bf16, {args.heads} heads of {args.head_dim}, {args.tokens} tokens "
        f"per batch, on {device} (torch {torch.__version__}, triton {triton.__version__}, "
        f"{platform.machine()}); median of {args.repeats} interleaved calls per peer (CUDA "
        f"events), after {args.warmup} warm-up calls; CPU load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after. Ratios: triton / SDPA (flash backend); "
        "TFLOP/s counts causal work (forward 2 T^2 d, backward 5 T^2 d per head).",
        "",
        "| T | batch | triton fwd (ms) | SDPA fwd (ms) | fwd ratio | triton fwd+bwd (ms) "
        "| SDPA fwd+bwd (ms) | fwd+bwd ratio | TFLOP/s triton / SDPA | scratch fwd+bwd (ms, ratio) "
        "| peak MiB triton / SDPA / scratch | max abs diff from SDPA, triton / scratch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Target triton fwd+bwd <= 1.5x SDPA at T = 1024: {target}.",
        "",
        "Autotuned configs (BLOCK_M x BLOCK_N, warps, stages): " + "; ".join(picks) + ".",
    ]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
