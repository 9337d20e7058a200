"""GPT-2 pre-tokenization and special-token splitting: the one place these rules live."""

from collections.abc import Iterable, Iterator

import regex

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PATTERN)


def special_token_regex(special_tokens: Iterable[str]) -> "regex.Pattern[str] | None":
    """A pattern whose `split` keeps each special token as its own piece.

    Longer tokens come first in the alternation so that overlapping specials match longest
    first (`<|eot|><|eot|>` before `<|eot|>`). Returns None when there are no specials.
    """
    tokens = sorted(set(special_tokens), key=len, reverse=True)
    for t in tokens:
        if not t:
            raise ValueError("special tokens must be non-empty strings; got ''")
    if not tokens:
        return None
    return regex.compile("(" + "|".join(regex.escape(t) for t in tokens) + ")")


def split_on_special_tokens(text: str, special_re: "regex.Pattern[str] | None") -> Iterator[tuple[str, bool]]:
    """Yield `(piece, is_special)` in order; empty pieces are skipped."""
    if special_re is None:
        if text:
            yield text, False
        return
    for i, piece in enumerate(special_re.split(text)):
        if piece:
            yield piece, i % 2 == 1
