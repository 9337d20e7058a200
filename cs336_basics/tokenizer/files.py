"""Vocab and merges files in GPT-2's format, so GPT-2's own `vocab.json` / `merges.txt` load as-is.

GPT-2 stores each token's bytes as a printable unicode string: the 188 bytes that already
print as themselves (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves, every other byte
(space, control bytes, ...) is shifted to an unused code point from U+0100 up. So a space is
`Ġ` and a newline `Ċ`, and no token string ever contains whitespace, which is what lets a
merges line be "left right".
"""

import json
import os
from pathlib import Path
from typing import TextIO

# A tokenizer folder holds these two files (Tokenizer.from_dir / save_dir).
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"


def _bytes_to_unicode() -> dict[int, str]:
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_UNICODE: dict[int, str] = _bytes_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_UNICODE.items()}


def token_to_str(token: bytes) -> str:
    """GPT-2's printable string for a token's bytes."""
    return "".join(BYTE_TO_UNICODE[b] for b in token)


def str_to_token(s: str) -> bytes:
    """Inverse of `token_to_str`; a character outside GPT-2's table raises ValueError."""
    try:
        return bytes(UNICODE_TO_BYTE[c] for c in s)
    except KeyError as e:
        raise ValueError(
            f"token {s!r} has character {e.args[0]!r}, which is not in GPT-2's byte-to-unicode "
            "table; "
            "is this a GPT-2-format vocab/merges file?"
        ) from None


def write_vocab(vocab: dict[int, bytes], f: TextIO) -> None:
    """Write `{token_string: id}` in id order as JSON to the open text file `f`."""
    encoded: dict[str, int] = {}
    for token_id in sorted(vocab):
        s = token_to_str(vocab[token_id])
        if s in encoded:  # JSON keys are unique: the file could not hold both ids
            raise ValueError(
                f"vocab ids {encoded[s]} and {token_id} both hold the bytes {vocab[token_id]!r}"
            )
        encoded[s] = token_id
    json.dump(encoded, f, ensure_ascii=False, indent=0)
    f.write("\n")


def write_merges(merges: list[tuple[bytes, bytes]], f: TextIO) -> None:
    """Write one `left right` line per merge in rank order, after GPT-2's `#version` header."""
    f.write("#version: 0.2\n")
    for left, right in merges:
        f.write(f"{token_to_str(left)} {token_to_str(right)}\n")


def _read_text(path: str | os.PathLike, what: str) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OSError(f"cannot read {what} file {path}: {e}") from None


def read_vocab_json(path: str | os.PathLike) -> dict[int, bytes]:
    """Read a GPT-2-format vocab JSON (`{token_string: id}`) into `{id: token_bytes}`."""
    try:
        raw = json.loads(_read_text(path, "vocab"))
    except json.JSONDecodeError as e:
        raise ValueError(f"vocab file {path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or not all(isinstance(i, int) for i in raw.values()):
        raise ValueError(
            f"vocab file {path} must be a JSON object mapping token strings to integer ids"
        )
    vocab = {token_id: str_to_token(s) for s, token_id in raw.items()}
    if len(vocab) != len(raw):
        raise ValueError(f"vocab file {path} gives the same id to two tokens")
    return vocab


def read_merges_txt(path: str | os.PathLike) -> list[tuple[bytes, bytes]]:
    """Read GPT-2-format merges (`left right` a line, in rank order), skipping a `#version` line."""
    merges = []
    for line_no, line in enumerate(_read_text(path, "merges").splitlines(), start=1):
        if not line or (line_no == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path}:{line_no}: expected 'left right', got {line!r}")
        merges.append((str_to_token(parts[0]), str_to_token(parts[1])))
    return merges
