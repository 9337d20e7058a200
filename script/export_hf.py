"""Export a trained model and its tokenizer as a Hugging Face Llama folder.

  uv run python script/export_hf.py --checkpoint runs/demo --out hf/demo

The folder (config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json) loads with no custom code:
  AutoModelForCausalLM.from_pretrained("hf/demo"), AutoTokenizer.from_pretrained("hf/demo")
which is the format lm-evaluation-harness and vLLM read. Models with a switch that Llama
cannot express (post-norm, no norm, NoPE, a SiLU or ReLU^2 FFN, QK-norm, logit soft-capping,
value embeddings) are refused with the switch named.
"""

import argparse
import sys
from pathlib import Path

import torch

from cs336_basics.export import export_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint file, or a run folder (its newest checkpoint)",
    )
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument(
        "--tokenizer-dir",
        help="folder with vocab.json + merges.txt (default: the run config's data.tokenizer_dir)",
    )
    p.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="type of the exported weights (default: %(default)s)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out if it already holds files"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if not Path(args.checkpoint).exists():
            raise FileNotFoundError(
                f"checkpoint {args.checkpoint} not found; give a checkpoint file or a run folder"
            )
        out = export_checkpoint(
            args.checkpoint,
            args.out,
            tokenizer_dir=args.tokenizer_dir,
            dtype=DTYPES[args.dtype],
            overwrite=args.overwrite,
        )
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    for f in sorted(out.iterdir()):
        print(f"  {f}  ({f.stat().st_size / 1e6:,.2f} MB)")
    print(
        f"load it with transformers: AutoModelForCausalLM.from_pretrained({str(out)!r}), "
        f"AutoTokenizer.from_pretrained({str(out)!r})"
    )


if __name__ == "__main__":
    main()
