r"""Print parameter counts, forward FLOPs and AdamW training memory of Transformer LM configs.

    uv run python script/accounting.py                          # GPT-2 tables + GPT-2 XL in detail
    uv run python script/accounting.py --context-length 16384   # the same at a longer context
    uv run python script/accounting.py --config configs/tinystories.toml
    uv run python script/accounting.py --vocab-size 10000 --context-length 256 --d-model 512 \
        --num-layers 4 --num-heads 16 --d-ff 1344 --batch-size 32
"""

import argparse
import dataclasses

from cs336_basics import accounting as acc
from cs336_basics.markdown import markdown_table
from cs336_basics.nn.transformer import VARIANTS, ModelConfig

GB = 1e9
MODEL_FLAGS = (
    "vocab_size",
    "context_length",
    "d_model",
    "num_layers",
    "num_heads",
    "d_ff",
    "ffn",
    "norm",
    "tie_embeddings",
    "qk_norm",
    "value_embeddings",
    "logit_softcap",
)
PARAM_GROUPS = {
    "embedding": ("token_embeddings", "value_embeddings"),
    "attention": ("attn.",),
    "FFN": ("ffn.",),
    "norms": ("ln1", "ln2", "ln_final"),
    "lm_head": ("lm_head",),
}
FLOP_GROUPS = {
    "q/k/v/o proj": ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.output_proj"),
    "QK^T": ("attn.scores",),
    "attn x V": ("attn.values",),
    "FFN": ("ffn.",),
    "lm_head": ("lm_head",),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__
        + "\nThe GPT-2 tables are printed unless --config or a model flag other than "
        "--context-length is given.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        help="TOML preset (e.g. configs/tinystories.toml) whose [model] table is the "
        "config to detail; without it: GPT-2 XL as the handout gives it (d_ff 6,400)",
    )
    m = p.add_argument_group("model overrides (on top of --config or GPT-2 XL)")
    m.add_argument("--vocab-size", type=int, help="(default: the base config's)")
    m.add_argument(
        "--context-length",
        type=int,
        help="also the sequence length of every FLOP and memory figure, "
        "and of the GPT-2 tables (default: the config's own; 1,024 for GPT-2)",
    )
    m.add_argument("--d-model", type=int, help="(default: the base config's)")
    m.add_argument("--num-layers", type=int, help="(default: the base config's)")
    m.add_argument("--num-heads", type=int, help="(default: the base config's)")
    m.add_argument(
        "--d-ff",
        type=int,
        help="FFN width (default: the base config's; when --d-model or --ffn "
        "changes and this is not given, the model's usual width for that FFN)",
    )
    m.add_argument("--ffn", choices=VARIANTS["ffn"], help="(default: the base config's)")
    m.add_argument("--norm", choices=VARIANTS["norm"], help="(default: the base config's)")
    m.add_argument(
        "--tie-embeddings",
        action=argparse.BooleanOptionalAction,
        help="(default: the base config's)",
    )
    m.add_argument(
        "--qk-norm",
        action=argparse.BooleanOptionalAction,
        help="RMSNorm on queries and keys: 2 d_k parameters per layer (default: the base config's)",
    )
    m.add_argument(
        "--value-embeddings",
        type=int,
        help="value embeddings in the last N layers: vocab_size x d_model + 1 parameters "
        "each (default: the base config's)",
    )
    m.add_argument(
        "--logit-softcap",
        type=float,
        help="cap on the logits: one more logits-sized activation (default: the base "
        "config's). zero_init_out and attention change no figure here",
    )
    t = p.add_argument_group("training")
    t.add_argument(
        "--batch-size",
        type=int,
        help="sequences per step for memory and time (default: the "
        "preset's training.batch_size; 1,024 without --config, as in the handout)",
    )
    t.add_argument(
        "--steps",
        type=int,
        help="training steps for the time estimate (default: the preset's "
        "total steps; 400,000 without --config, as in the handout)",
    )
    t.add_argument(
        "--memory-gb",
        type=float,
        default=80.0,
        help="memory budget in GB (1e9 bytes) for the largest batch (default: 80)",
    )
    t.add_argument(
        "--peak-tflops",
        type=float,
        default=19.5,
        help="hardware peak in TFLOP/s (default: 19.5, an A100 in float32, as in the handout)",
    )
    t.add_argument(
        "--mfu",
        type=float,
        default=0.5,
        help="model FLOPs utilization, a fraction of peak (default: 0.5)",
    )
    return p.parse_args()


def grouped(tally: acc.Tally, groups: dict[str, tuple[str, ...]]) -> dict[str, int]:
    parts = tally.components()
    return {
        g: sum(n for name, n in parts.items() if name.startswith(prefixes))
        for g, prefixes in groups.items()
    }


def share(n: float, total: float) -> str:
    return f"{n:.3g} ({100 * n / total:.1f}%)"


def gpt2_tables(context_length: int) -> None:
    configs = {name: acc.gpt2_config(name, context_length) for name in acc.GPT2_SHAPES}
    print(
        f"## GPT-2 shapes: vocab {acc.GPT2_VOCAB_SIZE:,}, context {context_length:,}, "
        "SwiGLU FFN (w1, w2, w3) with d_ff = 4 d_model (the handout's 6,400 for XL), untied lm_head\n"
    )
    rows = []
    for name, cfg in configs.items():
        params = acc.parameter_count(cfg)
        groups = grouped(params, PARAM_GROUPS)
        rows.append(
            [
                name,
                str(cfg.num_layers),
                str(cfg.d_model),
                str(cfg.num_heads),
                f"{cfg.d_ff:,}",
                *(f"{n:,}" for n in groups.values()),
                f"{params.total:,}",
                f"{4 * params.total / GB:.2f}",
            ]
        )
    print(
        markdown_table(
            ["model", "layers", "d_model", "heads", "d_ff", *PARAM_GROUPS, "parameters", "fp32 GB"],
            rows,
        )
    )
    print(
        f"\n### Forward FLOPs of one {context_length:,}-token sequence (matmuls only, share of total)\n"
    )
    rows = []
    for name, cfg in configs.items():
        flops = acc.forward_flops(cfg)
        rows.append(
            [
                name,
                *(share(n, flops.total) for n in grouped(flops, FLOP_GROUPS).values()),
                f"{flops.total:.4g}",
            ]
        )
    print(markdown_table(["model", *FLOP_GROUPS, "total"], rows))
    print()


def resolve_config(args: argparse.Namespace) -> tuple[ModelConfig, str, int, int]:
    """The config to detail, a label for it, and the batch size and steps to assume."""
    if args.config:
        from cs336_basics.config import load_config

        train_cfg = load_config(args.config)
        base, label = train_cfg.model, args.config
        batch_size, steps = train_cfg.training.batch_size, train_cfg.total_steps
    else:
        base, label, batch_size, steps = acc.gpt2_config("xl"), "GPT-2 XL", 1024, 400_000
    changes = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None}
    if changes:
        if "d_ff" not in changes and ({"d_model", "ffn"} & changes.keys()):
            changes["d_ff"] = None  # ModelConfig picks the usual width for the new shape
        label += ", overridden: " + ", ".join(
            f"{k}={v}" for k, v in changes.items() if v is not None
        )
    cfg = dataclasses.replace(base, **changes)
    return cfg, label, args.batch_size or batch_size, args.steps or steps


def share_table(what: str, unit: str, parts: dict[str, float], total: float, fmt: str) -> str:
    """A markdown table of `parts` (formatted with `fmt`) and each one's share of `total`."""
    rows = [[k, f"{n:{fmt}}", f"{100 * n / total:.1f}%"] for k, n in parts.items()]
    return markdown_table([what, unit, "share"], rows)


def detail(
    cfg: ModelConfig, label: str, batch_size: int, steps: int, args: argparse.Namespace
) -> None:
    t = cfg.context_length
    print(f"## {label}\n")
    print(", ".join(f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)) + "\n")
    params = acc.parameter_count(cfg)
    print(f"### Parameters: {params.total:,} ({4 * params.total / GB:.2f} GB in float32)\n")
    print(share_table("component", "parameters", params.components(), params.total, ","))

    flops = acc.forward_flops(cfg, batch_size)
    print(f"\n### Forward FLOPs, batch {batch_size:,} x {t:,} tokens: {flops.total:.4g}\n")
    print(share_table("matmul", "FLOPs", flops.components(), flops.total, ".4g"))

    mem = acc.adamw_memory(cfg, batch_size)
    print(
        f"\n### AdamW training memory, batch {batch_size:,} x {t:,} tokens, float32: {mem.total / GB:,.2f} GB\n"
    )
    parts = {
        p: getattr(mem, p) / GB
        for p in ("parameters", "gradients", "optimizer_state", "activations")
    }
    print(share_table("part", "GB", parts, mem.total / GB, ",.2f"))
    acts = acc.activation_count(cfg, 1)
    note = (
        " (SwiGLU adds w3 and the gate to the handout's W1, SiLU, W2; see --ffn silu)"
        if cfg.ffn == "swiglu"
        else ""
    )
    print(f"\nActivations per sequence: {4 * acts.total / GB:.3f} GB, by component{note}:\n")
    print(share_table("activation", "values per sequence", acts.components(), acts.total, ","))

    fits = acc.max_batch_size(cfg, args.memory_gb * GB)
    step = acc.training_step_flops(cfg, batch_size)
    seconds = acc.training_time_seconds(cfg, steps, batch_size, args.peak_tflops * 1e12, args.mfu)
    print(f"\n- Largest batch in {args.memory_gb:g} GB: {fits:,} sequences of {t:,} tokens")
    print(
        f"- One AdamW update: {acc.adamw_step_flops(cfg):.4g} FLOPs ({acc.ADAMW_FLOPS_PER_PARAMETER} per parameter)"
    )
    print(f"- One training step at batch {batch_size:,} (3 x forward + AdamW): {step:.4g} FLOPs")
    print(
        f"- {steps:,} steps at {args.mfu:.0%} MFU of {args.peak_tflops:g} TFLOP/s: "
        f"{seconds / 3600:,.1f} hours = {seconds / 86400:,.1f} days"
    )


def main() -> None:
    args = parse_args()
    try:
        cfg, label, batch_size, steps = resolve_config(args)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}") from None
    shape_flags = [k for k in MODEL_FLAGS if k != "context_length" and getattr(args, k) is not None]
    if not args.config and not shape_flags:
        gpt2_tables(cfg.context_length)
    detail(cfg, label, batch_size, steps, args)


if __name__ == "__main__":
    main()
