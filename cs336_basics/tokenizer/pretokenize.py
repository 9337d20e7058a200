"""GPT-2 pre-tokenization and special-token splitting (the one place these rules live), cutting
a file into ranges that split neither, and counting the pre-tokens of a file in parallel."""

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice

import regex

from cs336_basics.tokenizer.parallel import map_ranges

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PATTERN)

# The GPT-2 pattern specialized to ASCII text, where \p{L} is [A-Za-z], \p{N} is [0-9] and
# `regex`'s \s is [\t\n\v\f\r ]. The standard `re` engine runs it ~1.8x faster than `regex`
# runs the general pattern.
_ASCII_SPACE = r"\t\n\x0b\x0c\r "
ASCII_PRETOKEN_RE = re.compile(
    rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{_ASCII_SPACE}A-Za-z0-9]+"""
    rf"""|[{_ASCII_SPACE}]+(?![^{_ASCII_SPACE}])|[{_ASCII_SPACE}]+"""
)
# A cut between a non-space and a space character is a pre-token boundary whatever follows:
# no GPT-2 alternative lets a match run from a non-space into a space (only a *leading*
# space is ever joined to a word), and the whitespace alternatives never contain a non-space.
# Cutting after whitespace is not safe: `\s+(?!\S)` makes a trailing run depend on what follows.
NEXT_SAFE_CUT_RE = regex.compile(r"\S(?=\s)")
LAST_SAFE_CUT_RE = regex.compile(r"(?r)\S(?=\s)")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")


# Pre-tokens come in blocks of at most about this many characters: the strings of one block are
# freed before the next is made, so memory stays small and is reused whatever the text's length
# (each page of new memory costs a page fault, ~2 us on a virtual machine).
BLOCK_CHARS = 1 << 14


def pretokenize_blocks(text: str) -> Iterator[list[str]]:
    """`PRETOKEN_RE.findall(text)` as consecutive lists, faster.

    The ASCII stretches of the text, cut at safe cuts, go to ASCII_PRETOKEN_RE; only the few
    words around each non-ASCII character go to the slower general pattern.
    """
    start = 0
    while (other := _NON_ASCII_RE.search(text, start)) is not None:
        before = LAST_SAFE_CUT_RE.search(text, start, other.start())
        after = NEXT_SAFE_CUT_RE.search(text, other.start())
        cut = before.end() if before is not None else start
        end = after.end() if after is not None else len(text)
        yield from _ascii_blocks(text, start, cut)
        yield PRETOKEN_RE.findall(text, cut, end)
        start = end
    yield from _ascii_blocks(text, start, len(text))


def _ascii_blocks(text: str, start: int, end: int) -> Iterator[list[str]]:
    """Pre-tokens of the ASCII stretch text[start:end], in blocks of about BLOCK_CHARS."""
    while end - start > BLOCK_CHARS:
        cut = NEXT_SAFE_CUT_RE.search(text, start + BLOCK_CHARS, end)
        if cut is None:
            break
        yield ASCII_PRETOKEN_RE.findall(text, start, cut.end())
        start = cut.end()
    if start < end:
        yield ASCII_PRETOKEN_RE.findall(text, start, end)


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


def split_on_special_tokens(
    text: str, special_re: "regex.Pattern[str] | None"
) -> Iterator[tuple[str, bool]]:
    """Yield `(piece, is_special)` in order; empty pieces are skipped."""
    if special_re is None:
        if text:
            yield text, False
        return
    for i, piece in enumerate(special_re.split(text)):
        if piece:
            yield piece, i % 2 == 1


# --- Files: ranges that can be processed apart, and counting pre-tokens ------------------------
#
# For counting, text is decoded with "surrogateescape": a byte that is not valid UTF-8 becomes a
# lone surrogate (U+DC80..U+DCFF), which the GPT-2 pattern treats like punctuation, and encoding
# back with the same handler restores the exact original byte. So malformed input trains on its
# real bytes instead of crashing or being replaced by U+FFFD.

_CUT_WINDOW = 1 << 16
# A space right after an ASCII letter or digit always starts a new pre-token (no GPT-2 pre-token
# ends in a space, and a lone space before a non-space joins the next pre-token), so cutting the
# text just before it leaves every pre-token intact.
_SPACE_AFTER_WORD = regex.compile(rb"(?<=[A-Za-z0-9]) ")


def _crosses_special(buf: bytes, cut: int, specials: list[bytes]) -> bool:
    """True when some occurrence of a special token in `buf` spans offset `cut`."""
    return any(
        buf.startswith(tok, start)
        for tok in specials
        for start in range(max(cut - len(tok) + 1, 0), cut)
    )


def _first_cut(buf: bytes, lo: int, hi: int, specials: list[bytes]) -> int | None:
    """First safe cut in `buf[lo:hi]`: before a special token if there is one, else before a space."""
    starts = [i for tok in specials if (i := buf.find(tok, lo, hi + len(tok) - 1)) >= 0]
    while starts:
        cut = min(starts)
        if not _crosses_special(buf, cut, specials):
            return cut
        starts = [i for tok in specials if (i := buf.find(tok, cut + 1, hi + len(tok) - 1)) >= 0]
    for m in _SPACE_AFTER_WORD.finditer(buf, lo, hi):
        if not _crosses_special(buf, m.start(), specials):
            return m.start()
    return None


def chunk_ranges(
    path: str | os.PathLike, chunk_size: int, special_tokens: list[str]
) -> list[tuple[int, int]]:
    """Split a file into byte ranges of about `chunk_size` that can be pre-tokenized separately.

    Each cut falls at the start of a special token (so the special-token split is unchanged), or,
    where none is within 64 KiB, before a space that follows an ASCII letter or digit; never inside
    a special token. Counting the ranges one by one gives exactly the counts of the whole file. A
    text with neither stays one range. Reads only small windows around each cut.
    """
    specials = [t.encode("utf-8") for t in special_tokens]
    margin = max(map(len, specials), default=1)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        cuts = [0]
        pos = chunk_size
        while pos < size:
            lo = max(pos - margin, 0)  # enough left context to see a special token spanning `pos`
            f.seek(lo)
            buf = f.read(pos - lo + _CUT_WINDOW + margin)
            cut = _first_cut(buf, pos - lo, min(pos - lo + _CUT_WINDOW, len(buf)), specials)
            if cut is None:
                pos += _CUT_WINDOW
                continue
            cuts.append(lo + cut)
            pos = lo + cut + chunk_size
        cuts.append(size)
    return list(zip(cuts, cuts[1:]))


def count_pretokens(text: str, special_re: "regex.Pattern[str] | None", counts: Counter) -> None:
    """Add the GPT-2 pre-tokens of `text` to `counts`; special tokens split the text and are not counted."""
    for piece, is_special in split_on_special_tokens(text, special_re):
        if not is_special:
            for block in pretokenize_blocks(piece):
                counts.update(block)


def read_range(
    path: str | os.PathLike, start: int, end: int, errors: str = "surrogateescape"
) -> str:
    """Bytes start:end of a file as text. By default bytes that are not valid UTF-8 become lone
    surrogates (surrogateescape), which encode back to those bytes."""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start).decode("utf-8", errors)


def count_file_pretokens(
    path: str | os.PathLike,
    special_tokens: list[str],
    num_workers: int = 1,
    chunk_size: int = 1 << 22,
    progress: bool = False,
) -> Counter:
    """Counts of every pre-token (as bytes) of a text file, special tokens excluded.

    The file is read range by range (`chunk_ranges`) by `num_workers` forked processes
    (`map_ranges`; one works here), each keeping one Counter, so memory follows the number of
    distinct pre-tokens, not the file size.
    """
    from tqdm import tqdm  # here, not at the top: encoders never need it

    special_re = special_token_regex(special_tokens)
    ranges = chunk_ranges(path, chunk_size, special_tokens)
    counts: Counter = Counter()  # this process's, whichever it is

    def count_range(start: int, end: int) -> int:
        count_pretokens(read_range(path, start, end), special_re, counts)
        return end - start

    def gather() -> Counter:
        as_bytes = Counter({s.encode("utf-8", "surrogateescape"): n for s, n in counts.items()})
        counts.clear()
        return as_bytes

    with (
        map_ranges(count_range, ranges, num_workers, gather) as results,
        tqdm(
            total=ranges[-1][1],
            unit="B",
            unit_scale=True,
            desc="pre-tokenize",
            disable=not progress,
        ) as bar,
    ):
        for size in islice(results, len(ranges)):
            bar.update(size)
        total = next(results)
        for more in results:
            total.update(more)
    return total
