"""Training-step time of our TransformerLM against a model of the same shape on torch built-ins.

Ours is the trainer's step: our TransformerLM (attention kernel per `--attention`), our
cross_entropy, our AdamW, our clip_gradients, bf16 autocast on CUDA (fp32 on CPU). The
reference has the same shape and the same initial weights, built from torch's own parts:
nn.Embedding, nn.Linear, F.rms_norm, F.scaled_dot_product_attention(is_causal=True), F.silu,
F.cross_entropy, torch.optim.AdamW(fused=True) and clip_grad_norm_. Both get the same
treatment: with `compile`, torch.compile (default mode) of the forward + loss, the backward,
clipping and optimizer step eager; with `eager`, nothing compiled. The optimizer settings are
the trainer's defaults (OptimConfig: lr 1e-3, betas 0.9/0.95, weight decay 0.1, clip 1.0).

Each of our attention choices is timed interleaved with the reference in the same process, on
the same batch: medians of per-step wall times (device synchronized around each step), the
ratio ours / reference, tokens/s, and on CUDA MFU (model FLOPs per step from
cs336_basics.accounting: 3x the forward matmuls, attention scores over the full T x T square;
over the bf16 dense peak of the detected GPU) and peak memory (what torch.cuda.max_memory_allocated
would show were the model alone: its parameters and optimizer state plus the step's peak).

Shapes: tinystories (vocab 10,000, context 256, d_model 512, 4 layers, 16 heads, d_ff 1344),
gpt2-small (accounting.gpt2_config: vocab 50,257, context 1,024, d_model 768, 12 layers,
12 heads, d_ff 3,072) and tiny (for dry runs). `--batch-size auto` (the default for
gpt2-small on CUDA) takes the largest power of two at which every timed model fits, each
searched in eager mode, so that all rows share one batch; each model's own largest batch is
printed too.

    uv run python bench/bench_train_step.py --threads 2,1     # the CPU table (batch 8 x 256)
    python3 bench/bench_train_step.py --shape gpt2-small --jsonl rows.jsonl   # on a GPU
"""

import argparse
import gc
import json
import os
import platform
import re
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs336_basics.accounting import forward_flops, gpt2_config
from cs336_basics.config import OptimConfig
from cs336_basics.markdown import markdown_table, publish
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.nn.transformer import ModelConfig, TransformerLM
from cs336_basics.optim import AdamW, clip_gradients
from cs336_basics.training.device import autocast_context, enable_tf32

SHAPES = {
    "tinystories": ModelConfig(
        vocab_size=10_000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344
    ),
    "gpt2-small": gpt2_config("small"),
    "tiny": ModelConfig(
        vocab_size=512, context_length=64, d_model=64, num_layers=2, num_heads=4, d_ff=192
    ),
}

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets; the first
# pattern found in the device name wins. Names not listed: MFU is n/a (or pass --peak-tflops).
PEAK_BF16_TFLOPS: list[tuple[str, float | None]] = [
    (r"H100.*PCIe", 756.0),  # H100 PCIe
    (r"H[12]00 NVL", None),  # NVL parts run at other clocks and power: not assumed
    (r"H100|H200|GH200", 989.0),  # H100 SXM, H200 SXM, GH200 (the same Hopper peak)
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
]
GIB = 2**30
MODES = ("compile", "eager")  # the order of the tables' rows
ATTENTIONS = ("triton", "sdpa", "scratch", "auto")


def describe(cfg: ModelConfig) -> str:
    return (
        f"d_model {cfg.d_model}, {cfg.num_layers} layers, {cfg.num_heads} heads, d_ff {cfg.d_ff}, "
        f"vocab {cfg.vocab_size:,}, context {cfg.context_length}"
    )


def peak_bf16_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a GPU from its name (None: not in PEAK_BF16_TFLOPS)."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def model_flops_per_step(cfg: ModelConfig, batch_size: int) -> int:
    """Forward + backward matmul FLOPs (3x the forward, Kaplan et al.) of one step of
    `batch_size` sequences of context_length tokens: 6N per token plus attention."""
    return 3 * forward_flops(cfg, batch_size).total


# ---------------------------------------------------------------- the reference model


class RefBlock(nn.Module):
    def __init__(self, d_model: int, num_heads: int, d_ff: int, eps: float):
        super().__init__()
        self.num_heads, self.eps = num_heads, eps
        self.q_proj, self.k_proj, self.v_proj, self.output_proj = (
            nn.Linear(d_model, d_model, bias=False) for _ in range(4)
        )
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.ln1, self.ln2 = nn.Parameter(torch.ones(d_model)), nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, s, d = x.shape
        h = F.rms_norm(x, (d,), self.ln1, self.eps)
        q, k, v = (
            p(h).view(b, s, self.num_heads, -1).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k = rope_reference(q, cos, sin), rope_reference(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.output_proj(attn.transpose(1, 2).reshape(b, s, d))
        h = F.rms_norm(x, (d,), self.ln2, self.eps)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def rope_reference(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Interleaved-pair rotation written the usual way: x*cos + rotate(x)*sin."""
    rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


class RefLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, d_k = cfg.d_model, cfg.d_model // cfg.num_heads
        self.eps = cfg.eps
        self.token_embeddings = nn.Embedding(cfg.vocab_size, d)
        self.layers = nn.ModuleList(
            RefBlock(d, cfg.num_heads, cfg.d_ff, cfg.eps) for _ in range(cfg.num_layers)
        )
        self.ln_final = nn.Parameter(torch.ones(d))
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        inverse = cfg.rope_theta ** -(torch.arange(0, d_k, 2) / d_k)
        angles = torch.arange(cfg.context_length)[:, None] * inverse
        self.register_buffer("cos", angles.cos().repeat_interleave(2, -1), persistent=False)
        self.register_buffer("sin", angles.sin().repeat_interleave(2, -1), persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.token_embeddings(ids)
        cos, sin = self.cos[: ids.shape[1]], self.sin[: ids.shape[1]]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(F.rms_norm(x, (x.shape[-1],), self.ln_final, self.eps))


def reference_state_dict(ours: dict) -> dict:
    """Our state dict under the reference's key names (same tensors)."""
    renamed = {}
    for key, value in ours.items():
        key = key.replace("attn.", "").replace("ffn.", "")
        if key.endswith(("ln1.weight", "ln2.weight", "ln_final.weight")):
            key = key.removesuffix(".weight")
        renamed[key] = value
    return renamed


# ---------------------------------------------------------------- steps


@dataclass
class Variant:
    """One model being timed: its step (one training step on the batch it is given, returning
    the loss on the device) and the bytes it holds between steps."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[Tensor, Tensor], Tensor]
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    graph_breaks: int = 0
    first_loss: float = float("nan")

    def resident_bytes(self) -> int:
        """Parameters and optimizer state (gradients are freed after each step)."""
        tensors = list(self.model.parameters()) + [
            t for state in self.optimizer.state.values() for t in state.values()
        ]
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))


def our_variant(cfg: ModelConfig, attention: str, init: dict, device, compile_: bool) -> Variant:
    """The trainer's step on our model (trainer.py's train_step, one micro-batch, no data loading)."""
    o = OptimConfig()
    model = TransformerLM.from_config(replace(cfg, attention=attention), device=device)
    model.load_state_dict(init)
    optimizer = AdamW(
        model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
    )
    params = [p for p in model.parameters() if p.requires_grad]

    def forward_loss(x: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(model(x), y)

    forward_loss = torch.compile(forward_loss) if compile_ else forward_loss

    def step(x: Tensor, y: Tensor) -> Tensor:
        with autocast_context(torch.device(device)):
            loss = forward_loss(x, y)
        loss.backward()
        clip_gradients(params, o.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return Variant(attention, model, optimizer, step)


def reference_variant(model: RefLM, device, compile_: bool) -> tuple[Variant, str]:
    """The same step on the reference model with torch's AdamW (fused where torch has it for
    this device, else foreach; the second value says which)."""
    o = OptimConfig()
    hyper = dict(lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    try:
        optimizer, kind = torch.optim.AdamW(model.parameters(), fused=True, **hyper), "fused"
    except RuntimeError:
        optimizer, kind = torch.optim.AdamW(model.parameters(), foreach=True, **hyper), "foreach"
    params = list(model.parameters())

    def forward_loss(x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(model(x).flatten(0, -2), y.flatten())

    forward_loss = torch.compile(forward_loss) if compile_ else forward_loss

    def step(x: Tensor, y: Tensor) -> Tensor:
        with autocast_context(torch.device(device)):
            loss = forward_loss(x, y)
        loss.backward()
        nn.utils.clip_grad_norm_(params, o.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return Variant("reference", model, optimizer, step), kind


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(error: Exception) -> bool:
    """torch's OOM, or a library's allocation failure reported as a plain RuntimeError."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError)
        and any(s in str(error) for s in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED"))
    )


def timed_step(variant: Variant, x: Tensor, y: Tensor, device: torch.device) -> None:
    """One step, recording wall seconds, process CPU seconds and (CUDA) its peak memory."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    start, cpu = time.perf_counter(), time.process_time()
    variant.step(x, y)
    synchronize(device)
    variant.walls.append(time.perf_counter() - start)
    variant.cpus.append(time.process_time() - cpu)
    if device.type == "cuda":
        transient = torch.cuda.max_memory_allocated() - before
        variant.peaks.append(variant.resident_bytes() + transient)


def graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


def run_group(variants: list[Variant], x, y, device, steps: int, warmup: int) -> None:
    """Warm each variant up (the first call compiles and autotunes), then time `steps` rounds,
    each round every variant once, the order rotating so that no one always goes first."""
    for v in variants:
        breaks = graph_breaks()
        v.first_loss = v.step(x, y).item()
        v.graph_breaks = max(v.graph_breaks, graph_breaks() - breaks)  # 0 once compiled
        for _ in range(warmup - 1):
            v.step(x, y)
    for i in range(steps):
        for v in variants[i % len(variants) :] + variants[: i % len(variants)]:
            timed_step(v, x, y, device)


def fits(variant: Variant, batch: int, cfg: ModelConfig, device) -> bool:
    """Whether one eager training step at `batch` sequences runs without running out of memory."""
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.context_length), device=device)
    try:
        variant.step(x, x)
        synchronize(device)
        ok = True
    except RuntimeError as e:
        if not is_out_of_memory(e):
            raise
        ok = False
    variant.optimizer.zero_grad(set_to_none=True)
    free_memory()
    return ok


def largest_batch(variant: Variant, cfg: ModelConfig, device, start: int) -> int:
    """The largest power of two <= `start` (itself a power of two) at which `variant` fits; 0 if
    not even one sequence does."""
    batch = start
    while batch >= 1 and not fits(variant, batch, cfg, device):
        batch //= 2
    return batch


# ---------------------------------------------------------------- one shape


def batch_for_shape(args, cfg: ModelConfig, reference: RefLM, init: dict, device) -> dict:
    """{"batch": the batch to time, "largest": each model's own largest batch (auto only; a
    model whose step fails otherwise than for memory is left out, its rows will say why)}."""
    if args.batch_size != "auto":
        return {"batch": int(args.batch_size), "largest": {}}
    # Held while searching: what the timing holds besides the one model searched (the other
    # model of a pair and the reference's second optimizer), parameters and AdamW moments.
    parameter_bytes = sum(p.numel() * p.element_size() for p in reference.parameters())
    headroom = torch.empty(5 * parameter_bytes, dtype=torch.uint8, device=device)
    builders = {"reference": lambda: reference_variant(reference, device, compile_=False)[0]}
    for attention in args.attention:
        builders[attention] = partial(our_variant, cfg, attention, init, device, False)
    largest = {}
    for name, build in builders.items():
        try:
            largest[name] = largest_batch(build(), cfg, device, args.max_batch)
        except Exception:
            traceback.print_exc()
            print(f"{name}: its step fails; left out of the batch search", flush=True)
        free_memory()
    del headroom
    free_memory()
    print(f"largest batch per model (eager, powers of two): {largest}", flush=True)
    batch = min(largest.values(), default=0)
    if batch == 0:
        raise SystemExit(f"not even one sequence fits: {largest}")
    return {"batch": batch, "largest": largest}


def priority_order(modes: list[str], attentions: list[str]) -> list[tuple[str, str]]:
    """The (mode, attention) pairs, most wanted first, so that a time limit cuts the least
    wanted: the first of each (the compiled Triton step, the issue's target), then the other
    modes' pairs (eager ones cost no compilation), then the first mode's other attentions."""
    first = (modes[0], attentions[0])
    others = [(m, a) for m in modes[1:] for a in attentions]
    return [first, *others, *((modes[0], a) for a in attentions[1:])]


def measure_shape(args, device: torch.device, emit: Callable[[dict], None]) -> list[dict]:
    cfg = SHAPES[args.shape]
    torch.manual_seed(0)
    init = {k: v.cpu() for k, v in TransformerLM.from_config(cfg).state_dict().items()}
    reference = RefLM(cfg).to(device)
    ref_init = reference_state_dict(init)
    reference.load_state_dict(ref_init)
    chosen = batch_for_shape(args, cfg, reference, init, device)
    batch = chosen["batch"]
    generator = torch.Generator().manual_seed(1)
    x, y = (
        torch.randint(0, cfg.vocab_size, (batch, cfg.context_length), generator=generator).to(
            device
        )
        for _ in range(2)
    )
    tokens, flops = batch * cfg.context_length, model_flops_per_step(cfg, batch)
    rows = []
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        refs = {}  # mode -> (the reference's Variant, its AdamW kind), built at first use
        for mode, attention in priority_order(args.modes, args.attention):
            if mode not in refs:
                refs[mode] = reference_variant(reference, device, mode == "compile")
            ref, adamw_kind = refs[mode]
            reference.load_state_dict(ref_init)  # the same weights as ours for step 1
            ref.optimizer.zero_grad(set_to_none=True)  # nothing left by a failed pair
            ref.walls, ref.cpus, ref.peaks = [], [], []
            ours = None
            row = {"shape": args.shape, "mode": mode, "attention": attention, "threads": threads}
            row |= {"batch": batch, "context": cfg.context_length}
            try:
                ours = our_variant(cfg, attention, init, device, mode == "compile")
                run_group([ref, ours], x, y, device, args.steps, args.warmup)
            except Exception as e:  # recorded, and the other pairs still run
                traceback.print_exc()
                first_line = (str(e).splitlines() or [""])[0][:160]
                row["error"] = (
                    "out of memory" if is_out_of_memory(e) else f"{type(e).__name__}: {first_line}"
                )
            if "error" not in row:
                ours_s, ref_s = statistics.median(ours.walls), statistics.median(ref.walls)
                row |= {
                    "ours_ms": 1e3 * ours_s,
                    "ref_ms": 1e3 * ref_s,
                    "ratio": ours_s / ref_s,
                    "cpu_ratio": statistics.median(ours.cpus) / statistics.median(ref.cpus),
                    "ours_tok_s": tokens / ours_s,
                    "ref_tok_s": tokens / ref_s,
                    "loss_diff": abs(ours.first_loss - ref.first_loss),
                    "graph_breaks": [ours.graph_breaks, ref.graph_breaks],
                    "reference_adamw": adamw_kind,
                    "largest_batch": chosen["largest"],
                    "flops_per_step": flops,
                }
                if device.type == "cuda":
                    row["ours_peak_gib"] = max(ours.peaks) / GIB
                    row["ref_peak_gib"] = max(ref.peaks) / GIB
                    if args.peak_tflops:
                        row["ours_mfu"] = flops / ours_s / (args.peak_tflops * 1e12)
                        row["ref_mfu"] = flops / ref_s / (args.peak_tflops * 1e12)
            emit(row)
            rows.append(row)
            del ours
            free_memory()
        del refs
        free_memory()
    return rows


# ---------------------------------------------------------------- report


def table(rows: list[dict], cuda: bool) -> str:
    """One markdown row per (mode, threads, attention): ours against the reference timed with it."""
    header = ["mode", "attention", "batch", "ours ms", "ref ms", "ours / ref", "ours tok/s"]
    header += ["ref tok/s"]
    header += ["ours MFU", "ref MFU", "ours peak GiB", "ref peak GiB"] if cuda else []
    header += [] if cuda else ["threads", "CPU-time ratio"]
    lines = []

    def order(r: dict) -> tuple:
        return -r["threads"], MODES.index(r["mode"]), ATTENTIONS.index(r["attention"])

    for r in sorted(rows, key=order):
        if "error" in r:
            blank = [""] * (len(header) - 4)
            error = r["error"].replace("|", "/")
            lines.append([r["mode"], r["attention"], r["batch"], error, *blank])
            continue
        line = [
            r["mode"],
            r["attention"],
            f"{r['batch']} x {r['context']}",
            f"{r['ours_ms']:.1f}",
            f"{r['ref_ms']:.1f}",
            f"**{r['ratio']:.3f}**",
            f"{r['ours_tok_s']:,.0f}",
            f"{r['ref_tok_s']:,.0f}",
        ]
        if cuda:
            mfu = [f"{100 * r[k]:.1f}%" if k in r else "n/a" for k in ("ours_mfu", "ref_mfu")]
            line += mfu + [f"{r['ours_peak_gib']:.1f}", f"{r['ref_peak_gib']:.1f}"]
        else:
            line += [r["threads"], f"{r['cpu_ratio']:.3f}"]
        lines.append(line)
    return markdown_table(header, lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=list(SHAPES), default="tinystories")
    parser.add_argument(
        "--batch-size",
        default=None,
        help="sequences per step, or auto (largest power of two that fits, CUDA only); "
        "default: 128 for tinystories on CUDA, 8 on CPU; auto for gpt2-small on CUDA, 1 on CPU",
    )
    parser.add_argument(
        "--max-batch", type=int, default=512, help="auto starts here (a power of two; 512)"
    )
    parser.add_argument(
        "--attention",
        default=None,
        help="comma list of our attention kernels (scratch, triton, sdpa, auto) each timed "
        "against the reference; default: triton,sdpa,scratch on CUDA, scratch on CPU",
    )
    parser.add_argument(
        "--modes", default="compile,eager", help="comma list of compile, eager (default: both)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed rounds (default: 5)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps first, >= 1 (default: 2)"
    )
    parser.add_argument(
        "--threads",
        default="",
        help="comma list of torch thread counts, each a full set of rows, e.g. 2,1 "
        "(default: torch's choice only)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="bf16 dense peak for MFU (default: from the GPU's name, see PEAK_BF16_TFLOPS)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown output (default: bench/results/train_step.md on CPU, none on CUDA)",
    )
    parser.add_argument("--jsonl", type=Path, help="also append each row here as it is measured")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if args.batch_size is None:
        defaults = {"tinystories": 128 if cuda else 8, "gpt2-small": "auto" if cuda else 1}
        args.batch_size = defaults.get(args.shape, 4)
    if args.batch_size == "auto" and not cuda:
        raise SystemExit("--batch-size auto searches GPU memory; give a number on CPU")
    default_attention = "triton,sdpa,scratch" if cuda else "scratch"
    args.attention = (args.attention or default_attention).split(",")
    args.modes = args.modes.split(",")
    args.threads = [int(t) for t in args.threads.split(",") if t]
    args.steps = args.steps or 5
    if args.out is None and not cuda:
        args.out = Path("bench/results/train_step.md")
    return args


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        enable_tf32()  # as the trainer does
        name = torch.cuda.get_device_name()
        args.peak_tflops = args.peak_tflops or peak_bf16_tflops(name)
    else:
        name = platform.processor() or platform.machine()
    torch._dynamo.config.cache_size_limit = 64  # one compiled closure per model

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps({**row, "device": name, "peak_tflops": args.peak_tflops}) + "\n")

    load_before = os.getloadavg()[0]
    rows = measure_shape(args, device, emit)
    cfg = SHAPES[args.shape]
    adamw = rows[0].get("reference_adamw", "fused") if rows else "fused"
    lines = [
        "# Training step: our TransformerLM vs a torch built-ins reference",
        "",
        f"Shape {args.shape} ({describe(cfg)}), device {device.type} ({name}), torch {torch.__version__}, "
        + ("bf16 autocast" if device.type == "cuda" else "float32")
        + f". Median of {args.steps} interleaved steps after {args.warmup} warm-up. Ours: "
        "TransformerLM, cross_entropy, AdamW, clip_gradients (cs336_basics). Reference: nn.Linear, "
        f"F.rms_norm, F.scaled_dot_product_attention, F.cross_entropy, torch.optim.AdamW({adamw}), "
        "clip_grad_norm_. compile = torch.compile of forward + loss for both; backward, clipping "
        f"and optimizer eager for both. Load average (1 min) {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores.",
        "",
        table(rows, device.type == "cuda"),
        "",
    ]
    if device.type == "cuda":
        lines.append(
            f"MFU: model FLOPs per step ({model_flops_per_step(cfg, 1):.3e} per sequence: 3x the "
            "forward matmuls of cs336_basics.accounting, attention over the full T x T square) / "
            f"step time / {args.peak_tflops} TFLOP/s bf16 dense peak. Peak GiB: the model alone "
            "(its parameters and optimizer state plus the step's peak allocation)."
            if args.peak_tflops
            else "MFU: n/a (GPU not in PEAK_BF16_TFLOPS; pass --peak-tflops)."
        )
    else:
        lines.append(
            "CPU-time ratio: median CPU seconds per step (all threads of the process), ours / "
            "reference; less sensitive than wall time to other processes competing for the cores."
        )
    breaks = {
        f"{r['mode']} {r['attention']}": r["graph_breaks"]
        for r in rows
        if any(r.get("graph_breaks", []))
    }
    if breaks:
        lines += ["", f"torch.compile graph breaks [ours, reference]: {breaks}."]
    diffs = [r["loss_diff"] for r in rows if "loss_diff" in r]
    if diffs:
        lines += [
            "",
            f"First-step loss |ours - reference|: at most {max(diffs):.2e} (same weights).",
        ]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
