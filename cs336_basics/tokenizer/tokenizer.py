"""Byte-level BPE tokenizer: encode text to token ids and back, given a vocab and ranked merges."""

import os
import threading
from array import array
from collections.abc import Iterable, Iterator
from itertools import islice

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
# Pre-tokens not in the cache yet are merged when a batch of this many pre-tokens is looked up
# (the looked-up ids wait, 8 bytes a pre-token); together, as numpy arrays, when at least
# MERGE_MANY_MIN are new, else one at a time. Merging together costs ~2 us a word instead of
# 3-6, once there are hundreds.
BATCH_PRETOKENS = 1 << 16
MERGE_MANY_MIN = 256
# What a cache miss looks up as until it is merged: never a real value (whole ids of 2 or 4
# bytes), and told apart from one by its length alone.
HOLE = b"\0"
# encode_iterable gathers at least this many characters before it encodes a batch.
STREAM_BATCH_CHARS = 1 << 16


class _PretokenCache(dict):
    """Pre-token (str) -> its token ids, packed as `typecode` bytes. A miss looks up as HOLE and
    is noted in this thread's list from `new_misses`, to be merged with `merge_missed`. Reset
    to `seed` when it has gained CACHE_MAX_ENTRIES more, so that memory stays bounded.

    Pre-tokens are UTF-8 encoded with "surrogateescape", so text decoded from a file with that
    handler (a byte that is not valid UTF-8 becomes a lone surrogate) encodes its original bytes.
    """

    def __init__(self, merger: Merger, typecode: str, seed: dict[str, bytes]):
        super().__init__(seed)
        self._merger, self._typecode, self._seed = merger, typecode, seed
        self._max_entries = len(seed) + CACHE_MAX_ENTRIES
        # Per thread, so that threads can encode with one tokenizer at once.
        self._local = threading.local()

    def new_misses(self) -> list[str]:
        """An empty list that notes this thread's misses from now on."""
        self._local.missed = missed = []
        return missed

    def __missing__(self, pretoken: str) -> bytes:
        self._local.missed.append(pretoken)
        return HOLE

    def merge_missed(self, missed: list[str]) -> list[bytes]:
        """Merge and cache the pre-tokens in `missed`; give their packed ids in that order and
        empty the list."""
        new = list(set(missed))
        if len(self) + len(new) > self._max_entries:
            self.clear()
            self.update(self._seed)
        words = [p.encode("utf-8", "surrogateescape") for p in new]
        if len(words) >= MERGE_MANY_MIN:
            ids = self._merger.merge_many(words, np.dtype(self._typecode))
        else:
            typecode, merge = self._typecode, self._merger.merge
            ids = [array(typecode, merge(w)).tobytes() for w in words]
        merged = dict(zip(new, ids))
        self.update(merged)
        # From `merged`, not the cache, which another thread may reset meanwhile.
        packed = list(map(merged.__getitem__, missed))
        missed.clear()
        return packed


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

    def encode_to_bytes(self, text: str) -> bytes:
        """`encode(text)` as packed native-endian integers of type `id_dtype` (uint16, or uint32
        for a vocab past 65,536 ids): what `.npy` token files hold, without a list in between."""
        lookup, missed = self._pretoken_ids.__getitem__, self._pretoken_ids.new_misses()
        out: list[bytes | list[bytes]] = []  # packed ids, or a block's with holes still in it
        holed: list[tuple[int, int]] = []  # (index in out, holes) of each block with holes
        pretokens = 0
        for piece, is_special in split_on_special_tokens(text, self._special_re):
            if is_special:
                out.append(self._special_ids[piece])
                continue
            for block in pretokenize_blocks(piece):
                misses = len(missed)
                ids = list(map(lookup, block))
                if len(missed) == misses:
                    out.append(b"".join(ids))
                else:
                    holed.append((len(out), len(missed) - misses))
                    out.append(ids)
                pretokens += len(block)
                if pretokens >= BATCH_PRETOKENS:
                    self._fill_holes(out, holed, missed)
                    pretokens = 0
        self._fill_holes(out, holed, missed)
        return b"".join(out)

    def _fill_holes(
        self, out: list[bytes | list[bytes]], holed: list[tuple[int, int]], missed: list[str]
    ) -> None:
        """Merge the pre-tokens `missed` so far and put their ids into the blocks' holes."""
        if not holed:
            return
        filled = iter(self._pretoken_ids.merge_missed(missed))
        for k, holes in holed:
            ids = out[k]
            at = -1
            for packed in islice(filled, holes):
                at = ids.index(HOLE, at + 1)
                ids[at] = packed
            out[k] = b"".join(ids)
        holed.clear()

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
