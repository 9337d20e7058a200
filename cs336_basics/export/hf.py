"""A trained model and its tokenizer as a Hugging Face folder that transformers loads with no
custom code (`AutoModelForCausalLM.from_pretrained(out)`, `AutoTokenizer.from_pretrained(out)`),
the format that lm-evaluation-harness, vLLM and the Hub take (the tests load it with
transformers and tokenizers; those tools are not run here):

    out/
      config.json             a LlamaForCausalLM of the same shape (see export/llama.py)
      generation_config.json  <|endoftext|> as bos, eos and pad token
      model.safetensors       the weights under Llama's names, in Llama's RoPE layout
      tokenizer.json          our byte-level BPE (see export/tokenizer_json.py)
      tokenizer_config.json

The folder is written under a temporary name next to `out` and renamed into place when it
is complete, so `out` never holds half an export.
"""

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from cs336_basics.export.llama import check_llama_compatible, llama_config, llama_state_dict
from cs336_basics.export.tokenizer_json import tokenizer_config, tokenizer_json
from cs336_basics.nn.transformer import TransformerLM
from cs336_basics.tokenizer.tokenizer import Tokenizer

EOS_TOKEN = "<|endoftext|>"  # ends (and so starts) every document in our training data


@contextmanager
def _folder_replacing(out: Path, overwrite: bool) -> Iterator[Path]:
    """An empty folder next to `out` that replaces `out` on a clean exit and is removed on an
    exception. An `out` that holds files is replaced only with `overwrite`."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty; choose another output folder, or replace it "
            "(overwrite=True, --overwrite)"
        )
    staging = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as e:
        raise OSError(f"cannot write into {out.parent}: {e.strerror or e}") from e
    try:
        yield staging
        if out.is_dir() and any(out.iterdir()):
            os.replace(out, old)
        try:
            os.replace(staging, out)
        except OSError:
            if old.exists():
                os.replace(old, out)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_hf(
    model: TransformerLM,
    tokenizer: Tokenizer,
    out: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
) -> Path:
    """Write `model` and `tokenizer` to the folder `out` (see the module docstring).

    `dtype` is the weights' type in the file. Raises NotExportableError (a ValueError) naming
    each switch of the model that Llama cannot express, before anything is written.
    """
    cfg, out = model.config, Path(out)
    check_llama_compatible(cfg)
    if max(tokenizer.vocab) >= cfg.vocab_size:
        raise ValueError(
            f"the tokenizer has ids up to {max(tokenizer.vocab)}, but the model's vocab_size is "
            f"{cfg.vocab_size}; is this the tokenizer the model was trained with?"
        )
    eos_id = tokenizer.special_to_id.get(EOS_TOKEN)
    eos = EOS_TOKEN if eos_id is not None else None
    files = {
        "config.json": llama_config(cfg, dtype=dtype, bos_token_id=eos_id, eos_token_id=eos_id),
        "generation_config.json": {
            "bos_token_id": eos_id,
            "eos_token_id": eos_id,
            "pad_token_id": eos_id,
        },
        "tokenizer.json": tokenizer_json(tokenizer),
        "tokenizer_config.json": tokenizer_config(cfg.context_length, eos),
    }
    weights = llama_state_dict(model.state_dict(), cfg, dtype)
    with _folder_replacing(out, overwrite) as staging:
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
        for name, content in files.items():
            _write_json(staging / name, content)
    return out


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
) -> Path:
    """Export a checkpoint written by `train()` (or a run folder: its newest checkpoint) with
    the tokenizer of its config (`data.tokenizer_dir`, `data.special_tokens`), or the GPT-2
    format vocab.json + merges.txt in `tokenizer_dir`."""
    from cs336_basics.training.trainer import load_trained_model  # the trainer's heavy imports

    model, cfg = load_trained_model(checkpoint, device="cpu")
    folder = tokenizer_dir if tokenizer_dir is not None else cfg.data.tokenizer_dir
    tokenizer = Tokenizer.from_dir(folder, cfg.data.special_tokens)
    return export_hf(model, tokenizer, out, dtype=dtype, overwrite=overwrite)
