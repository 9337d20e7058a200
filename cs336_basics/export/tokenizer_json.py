"""Our byte-level BPE as a Hugging Face `tokenizer.json` (the `tokenizers` library's format).

The file reproduces our encoding:
- special tokens are "added tokens", cut out of the text before anything else, the longest
  first where they overlap, as `split_on_special_tokens` does;
- the `ByteLevel` pre-tokenizer splits the rest with the GPT-2 pattern, ours, and maps bytes
  to GPT-2's printable characters as our vocab.json does. Its regex engine (Oniguruma) and
  Python's `regex` split alike around every character that Unicode 14 assigns (checked code
  point by code point); they differ on 17,480 characters assigned since, which `regex`
  already classifies as letters or digits and tokenizers 0.23 does not;
- a BPE model with our vocab and ranked merges, `ignore_merges` set because a pre-token that
  is itself a vocab entry is that entry (as in our encoder and tiktoken), no unknown token
  and no byte fallback (every byte is a token);
- no normalizer and no post-processor: nothing is added to or changed in the text.
"""

from cs336_basics.tokenizer.files import token_to_str
from cs336_basics.tokenizer.tokenizer import Tokenizer


def _byte_level(**options) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True, **options}


def tokenizer_json(tokenizer: Tokenizer) -> dict:
    """The `tokenizer.json` structure of `tokenizer` (vocab, merges and special tokens)."""
    vocab: dict[str, int] = {}
    for token_id in sorted(tokenizer.vocab):
        s = token_to_str(tokenizer.vocab[token_id])
        if s in vocab:  # the file maps strings to ids, so it cannot hold both
            raise ValueError(
                f"vocab ids {vocab[s]} and {token_id} both hold the bytes "
                f"{tokenizer.vocab[token_id]!r}; a tokenizer.json cannot express that"
            )
        vocab[s] = token_id
    added = [
        {
            "id": token_id,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token, token_id in sorted(tokenizer.special_to_id.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _byte_level(trim_offsets=True),
        "post_processor": None,
        "decoder": _byte_level(trim_offsets=True),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            # "left right" strings (every tokenizers version reads them): no GPT-2 token
            # string holds a space.
            "merges": [f"{token_to_str(a)} {token_to_str(b)}" for a, b in tokenizer.merges],
        },
    }


def tokenizer_config(context_length: int, eos_token: str | None) -> dict:
    """`tokenizer_config.json`: the plain fast tokenizer class (a Llama tokenizer class would
    add a BOS token we never trained with) and `eos_token` as bos/eos/pad."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context_length,
        "bos_token": eos_token,
        "eos_token": eos_token,
        "pad_token": eos_token,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
