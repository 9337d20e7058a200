"""Byte-level BPE tokenizer: encode text to token ids and back, given a vocab and ranked merges."""

import os
from array import array
from collections.abc import Iterable, Iterator
from itertools import chain

import numpy as np

from cs336_basics.tokenizer.files import (
    read_merges_txt,
    read_vocab_json,
    write_merges_txt,
    write_vocab_json,
)
from cs336_basics.tokenizer.merging import Merger
from cs336_basics.tokenizer.pretokenize import (
    LAST_SAFE_CUT_RE,
    pretokenize_blocks,
    special_token_regex,
    split_on_special_tokens,
)

# Pre-tokens the encode cache gains before it is reset (~25 MB at most).
CACHE_MAX_ENTRIES = 200_000
# While many pre-tokens are new, text is encoded in batches of about this many characters:
# enough for the new pre-tokens of a batch to be merged together, few enough to bound memory.
BATCH_CHARS = 1 << 20
# New pre-tokens are merged in one batch while at least this share of the last
# NEW_SHARE_WINDOW pre-tokens were new, and a batch is expected to have at least
# MERGE_BATCH_MIN of them (else one at a time as they are met): finding them costs ~35 ns per
# pre-token, and a batch's lookups lose the CPU cache's locality, while merging them together
# saves ~4 us per new one; it pays from a few percent new.
MERGE_BATCH_MIN_SHARE = 0.02
MERGE_BATCH_MIN = 64
NEW_SHARE_WINDOW = 20_000
# encode_iterable gathers at least this many characters before it encodes a batch.
STREAM_BATCH_CHARS = 1 << 16


class _PretokenCache(dict):
    """Pre-token (str) -> its token ids, packed as `typecode` bytes; a miss merges it. Reset to
    `seed` when it has gained CACHE_MAX_ENTRIES more, so that memory stays bounded.

    Pre-tokens are UTF-8 encoded with "surrogateescape", so text decoded from a file with that
    handler (a byte that is not valid UTF-8 becomes a lone surrogate) encodes its original bytes.
    """

    def __init__(self, merger: Merger, typecode: str, seed: dict[str, bytes]):
        super().__init__(seed)
        self._merger, self._typecode, self._seed = merger, typecode, seed
        self._max_entries = len(seed) + CACHE_MAX_ENTRIES
        self.misses = 0  # pre-tokens merged one at a time, ever

    def __missing__(self, pretoken: str) -> bytes:
        self.misses += 1
        self.make_room(1)
        ids = self._merger.merge(pretoken.encode("utf-8", "surrogateescape"))
        packed = self[pretoken] = array(self._typecode, ids).tobytes()
        return packed

    def make_room(self, entries: int) -> None:
        """Reset to the seed unless `entries` more fit."""
        if len(self) + entries > self._max_entries:
            self.clear()
            self.update(self._seed)


class Tokenizer:
    """Byte-level BPE with GPT-2 pre-tokenization and special tokens.

    vocab: id -> token bytes; must hold every single byte that the text needs.
    merges: (left, right) pairs in rank order (earliest created first).
    special_tokens: strings kept whole; those not in the vocab get new ids after the largest.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: list[str] | None = None,
    ):
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges: list[tuple[bytes, bytes]] = list(merges)
        self.special_tokens: list[str] = list(dict.fromkeys(special_tokens or []))
        # A token that appears twice in the vocab maps to its smallest id.
        self.token_to_id: dict[bytes, int] = {}
        for token_id in sorted(self.vocab, reverse=True):
            self.token_to_id[self.vocab[token_id]] = token_id

        next_id = max(self.vocab, default=-1) + 1
        self.special_to_id: dict[str, int] = {}
        for token in self.special_tokens:
            token_bytes = token.encode("utf-8")
            if token_bytes not in self.token_to_id:
                self.vocab[next_id] = token_bytes
                self.token_to_id[token_bytes] = next_id
                next_id += 1
            self.special_to_id[token] = self.token_to_id[token_bytes]
        self._special_re = special_token_regex(self.special_tokens)
        self._max_special_len = max(map(len, self.special_tokens), default=0)

        self._merger = Merger(self.token_to_id, self.merges)
        # Ids travel packed as native uint16 (uint32 for a vocab past 65,536 ids) bytes: joining
        # bytes is the fastest way to concatenate many short id sequences.
        self.id_dtype = np.dtype(np.uint16 if max(self.vocab, default=0) < 1 << 16 else np.uint32)
        self._typecode = {2: "H", 4: "I"}[self.id_dtype.itemsize]
        assert array(self._typecode).itemsize == self.id_dtype.itemsize
        # A pre-token that is itself a token is that token (tiktoken does the same), so those
        # cache entries are known up front.
        whole_tokens = {
            token.decode("utf-8", "surrogateescape"): array(self._typecode, [token_id]).tobytes()
            for token, token_id in self.token_to_id.items()
        }
        self._pretoken_ids = _PretokenCache(self._merger, self._typecode, whole_tokens)
        # The share of recent pre-tokens that were not cached yet; a new cache guesses all.
        self._new_share, self._seen, self._new = 1.0, 0, 0
        self._special_ids = {s: whole_tokens[s] for s in self.special_to_id}

    def __reduce__(self):
        # Pickle what rebuilds the tokenizer, not its cache.
        return type(self), (self.vocab, self.merges, self.special_tokens)

    @classmethod
    def from_files(
        cls,
        vocab_path: str | os.PathLike,
        merges_path: str | os.PathLike,
        special_tokens: list[str] | None = None,
    ) -> "Tokenizer":
        """Load GPT-2-format `vocab.json` and `merges.txt` (GPT-2's own files load as they are)."""
        return cls(read_vocab_json(vocab_path), read_merges_txt(merges_path), special_tokens)

    def save(self, vocab_path: str | os.PathLike, merges_path: str | os.PathLike) -> None:
        """Write the vocab (specials included) and merges in GPT-2 format, each file atomically."""
        write_vocab_json(self.vocab, vocab_path)
        write_merges_txt(self.merges, merges_path)

    @property
    def _many_new(self) -> bool:
        """Whether recent text brought enough new pre-tokens to merge them in batches."""
        return self._new_share >= MERGE_BATCH_MIN_SHARE

    def _encode_batch(self, parts: list[bytes | list[str]], out: list[bytes]) -> None:
        """Append the packed ids of `parts` (special-token ids, or blocks of pre-tokens) to `out`.

        While text brings many new pre-tokens (a new cache, a new kind of text), the new ones of
        a batch are found first and merged together in one numpy batch (`Merger.merge_many`);
        when few are new, finding them costs more than it saves, and the cache merges them one
        at a time as it finds them missing.
        """
        cache = self._pretoken_ids
        blocks = [part for part in parts if type(part) is list]
        count = sum(map(len, blocks))
        merged_together, misses_before = 0, cache.misses
        if self._many_new and self._new_share * count >= MERGE_BATCH_MIN:
            new = list(set(chain.from_iterable(blocks)).difference(cache))
            cache.make_room(len(new))
            encoded = [p.encode("utf-8", "surrogateescape") for p in new]
            cache.update(zip(new, self._merger.merge_many(encoded, self.id_dtype)))
            merged_together = len(new)
        pretoken_ids = cache.__getitem__
        for part in parts:
            out.append(part if type(part) is bytes else b"".join(map(pretoken_ids, part)))
        # The share of new pre-tokens, measured over at least NEW_SHARE_WINDOW of them.
        self._seen += count
        self._new += merged_together + cache.misses - misses_before
        if self._seen >= NEW_SHARE_WINDOW:
            self._new_share = self._new / self._seen
            self._seen = self._new = 0

    def encode_to_bytes(self, text: str) -> bytes:
        """`encode(text)` as packed native-endian integers of type `id_dtype` (uint16, or uint32
        for a vocab past 65,536 ids): what `.npy` token files hold, without a list in between."""
        out: list[bytes] = []
        parts: list[bytes | list[str]] = []
        chars = 0
        for piece, is_special in split_on_special_tokens(text, self._special_re):
            if is_special:
                parts.append(self._special_ids[piece])
                continue
            parts.extend(pretokenize_blocks(piece))
            chars += len(piece)
            # Batches gather text only while new pre-tokens are many; else each piece of text
            # is looked up at once, while its pre-tokens are still in the CPU's cache.
            if chars >= (BATCH_CHARS if self._many_new else 0):
                self._encode_batch(parts, out)
                parts, chars = [], 0
        self._encode_batch(parts, out)
        return b"".join(out)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens (longest match first) become their own ids."""
        return array(self._typecode, self.encode_to_bytes(text)).tolist()

    def _safe_cut(self, text: str) -> int:
        """The largest i with encode(text[:i]) + encode(text[i:] + more) == encode(text + more)
        whatever `more` is; 0 if none is known yet. No pre-token or special token spans i."""
        # A special token starting at or after `limit` may still grow with `more`, and one that
        # starts before it is already decided, so a cut at or before `limit` splits none.
        limit = len(text) - self._max_special_len + 1 if self._special_re else len(text)
        start = 0
        if self._special_re is not None:
            for match in self._special_re.finditer(text):
                if match.start() >= limit:
                    break
                start = match.end()
        space = LAST_SAFE_CUT_RE.search(text, start, max(start, limit))
        return space.end() if space is not None else start

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Lazily yield encode("".join(iterable)), holding only a bounded window of text.

        Text is buffered until a cut that splits no pre-token or special token (between a
        non-space and a space, or after a special token). Memory grows only with the longest
        stretch that has no such cut.
        """
        pending: list[str] = []
        pending_chars, flush_at = 0, STREAM_BATCH_CHARS
        for text in iterable:
            pending.append(text)
            pending_chars += len(text)
            if pending_chars < flush_at:
                continue
            buffer = "".join(pending)
            cut = self._safe_cut(buffer)
            if cut == 0:  # no safe cut yet: wait for twice as much so rescans stay linear overall
                pending, flush_at = [buffer], 2 * pending_chars
                continue
            yield from self.encode(buffer[:cut])
            pending, pending_chars, flush_at = [buffer[cut:]], len(buffer) - cut, STREAM_BATCH_CHARS
        yield from self.encode("".join(pending))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD."""
        vocab = self.vocab
        try:
            data = b"".join([vocab[i] for i in ids])
        except KeyError as e:
            raise ValueError(
                f"cannot decode token id {e.args[0]!r}: not in the vocab (ids 0..{max(vocab)})"
            ) from None
        return data.decode("utf-8", errors="replace")
