"""Training-step time of our TransformerLM against a reference built from torch.nn building blocks.

One step = forward + cross-entropy + backward + AdamW step, on the handout's TinyStories model
(vocab 10,000, context 256, d_model 512, 4 layers, 16 heads, d_ff 1344). The reference has
the same shapes and the same weights, but uses nn.Linear, nn.Embedding, F.rms_norm,
F.scaled_dot_product_attention(is_causal=True), F.silu, F.cross_entropy and torch.optim.AdamW.
Both run in the same process with the same dtype and threads, steps interleaved; we report
medians after warm-up, in eager mode and under torch.compile (forward + loss compiled, the
optimizer step eager for both). On CUDA, bf16 autocast rows and MFU are added.

    uv run python bench/bench_train_step.py --batch-size 8 --steps 5
"""

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cs336_basics.fileio import atomic_write
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.nn.transformer import TransformerLM

SHAPE = {
    "vocab_size": 10_000,
    "context_length": 256,
    "d_model": 512,
    "num_layers": 4,
    "num_heads": 16,
    "d_ff": 1344,
}
THETA = 10_000.0


class RefBlock(nn.Module):
    def __init__(self, d_model: int, num_heads: int, d_ff: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.output_proj = (
            nn.Linear(d_model, d_model, bias=False) for _ in range(4)
        )
        self.w1, self.w3 = (
            nn.Linear(d_model, d_ff, bias=False),
            nn.Linear(d_model, d_ff, bias=False),
        )
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.ln1, self.ln2 = nn.Parameter(torch.ones(d_model)), nn.Parameter(torch.ones(d_model))

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        h = F.rms_norm(x, (d,), self.ln1, 1e-5)
        q, k, v = (
            p(h).view(b, s, self.num_heads, -1).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k = rope_reference(q, cos, sin), rope_reference(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.output_proj(attn.transpose(1, 2).reshape(b, s, d))
        h = F.rms_norm(x, (d,), self.ln2, 1e-5)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def rope_reference(x, cos, sin):
    """Interleaved-pair rotation written the usual way: x*cos + rotate(x)*sin."""
    rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


class RefLM(nn.Module):
    def __init__(self, vocab_size, context_length, d_model, num_layers, num_heads, d_ff):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(RefBlock(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.ln_final = nn.Parameter(torch.ones(d_model))
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        d_k = d_model // num_heads
        angles = torch.arange(context_length)[:, None] * THETA ** -(torch.arange(0, d_k, 2) / d_k)
        self.register_buffer("cos", angles.cos().repeat_interleave(2, -1), persistent=False)
        self.register_buffer("sin", angles.sin().repeat_interleave(2, -1), persistent=False)

    def forward(self, ids):
        x = self.token_embeddings(ids)
        cos, sin = self.cos[: ids.shape[1]], self.sin[: ids.shape[1]]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(F.rms_norm(x, (x.shape[-1],), self.ln_final, 1e-5))


def reference_state_dict(ours: dict) -> dict:
    """Our state dict under the reference's key names (same tensors)."""
    renamed = {}
    for key, value in ours.items():
        key = key.replace("attn.", "").replace("ffn.", "")
        if key.endswith(("ln1.weight", "ln2.weight", "ln_final.weight")):
            key = key.removesuffix(".weight")
        renamed[key] = value
    return renamed


def reference_cross_entropy(logits, targets):
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


def our_adamw(params, lr):
    try:
        from cs336_basics.optim import AdamW
    except ImportError:
        return torch.optim.AdamW(params, lr=lr), "torch.optim.AdamW (cs336_basics.optim missing)"
    return AdamW(
        params, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1
    ), "cs336_basics.optim.AdamW"


def make_step(model, optimizer, loss_fn, x, y, compile_: bool, autocast_dtype, device):
    def forward_loss(x, y):
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return loss_fn(model(x), y)

    forward_loss = torch.compile(forward_loss) if compile_ else forward_loss

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = forward_loss(x, y)
        loss.backward()
        optimizer.step()
        return loss.item()  # also synchronizes the device

    return step


def timed(step) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process over all its threads) for one step."""
    start, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - start, time.process_time() - cpu


def matmul_flops_per_step(tokens: int) -> float:
    """6 * (matmul params) * tokens + attention scores/values (4 * seq * d_model per token per
    layer forward, full square, causal half not discounted), times 3 for forward+backward."""
    s = SHAPE
    d, f, n = s["d_model"], s["d_ff"], s["num_layers"]
    matmul_params = n * (4 * d * d + 3 * d * f) + d * s["vocab_size"]
    attention = n * 4 * s["context_length"] * d
    return 3 * tokens * (2 * matmul_params + attention)


def run_mode(args, device, compile_: bool, autocast_dtype) -> dict:
    torch.manual_seed(0)
    ours = TransformerLM(**SHAPE, rope_theta=THETA, device=device)
    ref = RefLM(**SHAPE).to(device)
    ref.load_state_dict(reference_state_dict(ours.state_dict()))
    opt_ours, opt_name = our_adamw(ours.parameters(), args.lr)
    opt_ref = torch.optim.AdamW(
        ref.parameters(), lr=args.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1
    )
    x = torch.randint(
        0, SHAPE["vocab_size"], (args.batch_size, SHAPE["context_length"]), device=device
    )
    y = torch.randint(
        0, SHAPE["vocab_size"], (args.batch_size, SHAPE["context_length"]), device=device
    )
    steps = {
        "ours": make_step(ours, opt_ours, cross_entropy, x, y, compile_, autocast_dtype, device),
        "reference": make_step(
            ref, opt_ref, reference_cross_entropy, x, y, compile_, autocast_dtype, device
        ),
    }
    first_losses = {name: step() for name, step in steps.items()}  # warm-up 1 (compiles)
    for _ in range(args.warmup - 1):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for i in range(args.steps):
        order = list(steps) if i % 2 == 0 else list(steps)[::-1]
        for name in order:
            times[name].append(timed(steps[name]))
    medians = {name: statistics.median(wall for wall, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) for name, t in times.items()}
    tokens = args.batch_size * SHAPE["context_length"]
    mode = ("torch.compile" if compile_ else "eager") + (
        f" + {autocast_dtype} autocast" if autocast_dtype else ""
    )
    row = {
        "mode": mode,
        "ours_ms": 1e3 * medians["ours"],
        "ref_ms": 1e3 * medians["reference"],
        "ratio": medians["ours"] / medians["reference"],
        "cpu_ratio": cpu["ours"] / cpu["reference"],
        "ours_tok_s": tokens / medians["ours"],
        "ref_tok_s": tokens / medians["reference"],
        "loss_diff": abs(first_losses["ours"] - first_losses["reference"]),
        "optimizer": opt_name,
    }
    if device.type == "cuda":
        flops = matmul_flops_per_step(tokens)
        row["ours_mfu"] = flops / medians["ours"] / (args.peak_tflops * 1e12)
        row["ref_mfu"] = flops / medians["reference"] / (args.peak_tflops * 1e12)
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: 8)")
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per model and mode (default: 5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps first, >= 1 (default: 2)"
    )
    parser.add_argument(
        "--modes", default="eager,compile", help="comma list of eager, compile (default: both)"
    )
    parser.add_argument(
        "--threads",
        default="",
        help="comma list of torch thread counts, each a full set of rows, e.g. 2,1 "
        "(default: torch's choice only)",
    )
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="AdamW learning rate (default: 1e-3)"
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="bf16 dense peak for MFU on CUDA (default: 989, H100 SXM)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/train_step.md"),
        help="markdown output (default: %(default)s)",
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configs = [(mode == "compile", None) for mode in args.modes.split(",")]
    if device.type == "cuda":
        configs += [(c, torch.bfloat16) for c, _ in configs]
    load_before = os.getloadavg()[0]
    rows = []
    for threads in [int(t) for t in args.threads.split(",") if t] or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        rows += [{**run_mode(args, device, c, dt), "threads": threads} for c, dt in configs]

    machine = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{platform.processor() or 'CPU'}"
    )
    lines = [
        "# Training step: our TransformerLM vs torch.nn reference",
        "",
        (
            f"TinyStories shape {SHAPE}, batch {args.batch_size} x {SHAPE['context_length']} tokens, float32 "
            f"parameters, device {device.type} ({machine}), torch "
            f"{torch.__version__}. Median of {args.steps} interleaved steps after {args.warmup} warm-up. "
            f"Optimizer: ours {rows[0]['optimizer']}, reference torch.optim.AdamW. "
            f"Machine load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
            f"on {os.cpu_count()} cores: other processes compete unless it is below 1."
        ),
        "",
    ]
    mfu = device.type == "cuda"
    lines.append(
        "| mode | threads | ours ms/step | reference ms/step | ours / reference | ours tok/s | reference tok/s "
        "| CPU-time ratio |" + (" ours MFU | reference MFU |" if mfu else "")
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if mfu else ""))
    for r in rows:
        line = (
            f"| {r['mode']} | {r['threads']} | {r['ours_ms']:.0f} | {r['ref_ms']:.0f} | {r['ratio']:.3f} | "
            f"{r['ours_tok_s']:,.0f} | {r['ref_tok_s']:,.0f} | {r['cpu_ratio']:.3f} |"
        )
        if mfu:
            line += f" {100 * r['ours_mfu']:.1f}% | {100 * r['ref_mfu']:.1f}% |"
        lines.append(line)
    if mfu:
        lines += [
            "",
            f"MFU = FLOPs per step / step time / {args.peak_tflops} TFLOP/s; {matmul_flops_per_step.__doc__}",
        ]
    lines += [
        "",
        (
            "CPU-time ratio: median CPU seconds per step (all threads of the process), ours / reference; "
            "less sensitive than wall time to other processes competing for the cores."
        ),
    ]
    lines += [
        "",
        f"First-step loss |ours - reference|: {max(r['loss_diff'] for r in rows):.2e} (same weights).",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    with atomic_write(args.out, "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
