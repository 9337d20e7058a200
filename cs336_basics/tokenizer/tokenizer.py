"""Byte-level BPE tokenizer: encode text to token ids and back, given a vocab and ranked merges."""

import os
import threading
from array import array
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from cs336_basics.fileio import atomic_write
from cs336_basics.tokenizer.files import (
    MERGES_FILE,
    VOCAB_FILE,
    read_merges_txt,
    read_vocab_json,
    write_merges,
    write_vocab,
)
from cs336_basics.tokenizer.merging import Merger
from cs336_basics.tokenizer.pretokenize import (
    GPT2_PATTERN,
    LAST_SAFE_CUT_RE,
    pretokenize_blocks,
    special_token_regex,
    split_on_special_tokens,
)

# Pre-tokens a thread's encode cache gains before it is reset (~25 MB at most).
CACHE_MAX_ENTRIES = 200_000
# encode_iterable gathers at least this many characters before it encodes a batch.
STREAM_BATCH_CHARS = 1 << 16
# Pre-tokens not cached yet are merged (together: Merger.merge_many) after this many have been
# looked up; their blocks wait, ~8 bytes a pre-token.
BATCH_PRETOKENS = 1 << 16


class _PretokenCache(dict):
    """Pre-token (str) -> its token ids, packed as `typecode` bytes, for one thread.

    A pre-token not cached yet looks up as b"" and is noted in `missed`; `merge_missed` merges
    the noted ones, together (`Merger.merge_many`), and caches them. Pre-tokens are encoded as
    strict UTF-8: a lone surrogate raises UnicodeEncodeError, which `encode_to_bytes` handles.
    """

    def __init__(self, merger: Merger, typecode: str, seed: dict[str, bytes]):
        super().__init__(seed)
        self._merger, self._typecode, self._seed = merger, typecode, seed
        self.missed: list[str] = []

    def __missing__(self, pretoken: str) -> bytes:
        self.missed.append(pretoken)
        return b""

    def merge_missed(self) -> None:
        new = list(set(self.missed))
        self.missed.clear()
        ids = self._merger.merge_many([p.encode("utf-8") for p in new], self._typecode)
        self.update(zip(new, ids))

    def bound(self) -> None:
        """Back to the vocab's own tokens once it has gained CACHE_MAX_ENTRIES."""
        if len(self) > len(self._seed) + CACHE_MAX_ENTRIES:
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

        # Ids travel packed as native uint16 (uint32 for a vocab past 65,536 ids) bytes: joining
        # bytes is the fastest way to concatenate many short id sequences.
        self.id_dtype = np.dtype(np.uint16 if max(self.vocab, default=0) < 1 << 16 else np.uint32)
        self._typecode = {2: "H", 4: "I"}[self.id_dtype.itemsize]
        # A pre-token that is itself a token is that token (tiktoken does the same), so those
        # cache entries are known up front. Tokens that are not valid UTF-8 are no pre-token.
        whole_tokens = {}
        for token, token_id in self.token_to_id.items():
            try:
                whole_tokens[token.decode("utf-8")] = array(self._typecode, [token_id]).tobytes()
            except UnicodeDecodeError:
                pass
        self._merger = Merger(self.token_to_id, self.merges)
        self._seed = whole_tokens
        self._local = threading.local()

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

    @classmethod
    def from_dir(
        cls, path: str | os.PathLike, special_tokens: list[str] | None = None
    ) -> "Tokenizer":
        """Load a tokenizer folder written by `save_dir` (or any folder with GPT-2's two files)."""
        folder = Path(path)
        missing = [name for name in (VOCAB_FILE, MERGES_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"no tokenizer in {folder}: {' and '.join(missing)} not found. Train one with "
                f"`uv run python script/train_bpe_tokenizer.py --input TEXT --out {folder}`"
            )
        return cls.from_files(folder / VOCAB_FILE, folder / MERGES_FILE, special_tokens)

    def save(self, vocab_path: str | os.PathLike, merges_path: str | os.PathLike) -> None:
        """Write the vocab (specials included) and merges in GPT-2 format, atomically: both
        files are written in full (to temp files) before either replaces its old version."""
        with ExitStack() as files:
            vocab_file = files.enter_context(atomic_write(vocab_path, "w", encoding="utf-8"))
            merges_file = files.enter_context(atomic_write(merges_path, "w", encoding="utf-8"))
            write_vocab(self.vocab, vocab_file)
            write_merges(self.merges, merges_file)

    def save_dir(self, path: str | os.PathLike) -> None:
        """Write `vocab.json` and `merges.txt` into the folder (made if missing), as `save` does."""
        self.save(Path(path) / VOCAB_FILE, Path(path) / MERGES_FILE)

    def to_tiktoken(self, name: str = "cs336_bpe"):
        """This tokenizer as a `tiktoken.Encoding` (tiktoken must be installed).

        tiktoken ranks a merge by the id of the token it makes, so its ids equal ours when the
        vocab's ids follow the merge order: true of every vocab `train_bpe` makes and of GPT-2's.
        Encode with `allowed_special="all"` to match `encode` on text with special tokens.
        """
        try:
            import tiktoken
        except ImportError:
            raise ImportError(
                "Tokenizer.to_tiktoken needs the tiktoken package: `uv add tiktoken` "
                "or `pip install tiktoken`"
            ) from None
        special_ids = set(self.special_to_id.values())
        ranks = {t: i for t, i in self.token_to_id.items() if i not in special_ids}
        return tiktoken.Encoding(
            name=name,
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=dict(self.special_to_id),
        )

    def encode_to_bytes(self, text: str) -> bytes:
        """`encode(text)` as packed native-endian integers of type `id_dtype` (uint16, or uint32
        for a vocab past 65,536 ids): what `.npy` token files hold, without a list in between.

        Text with lone surrogates (no UTF-8 exists for them) is read as tiktoken reads it:
        through UTF-16 with replacement, so a valid surrogate pair becomes its character and a
        lone surrogate U+FFFD.
        """
        try:
            return self._encode_to_bytes(text)
        except UnicodeEncodeError:
            return self._encode_to_bytes(
                text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            )

    def _encode_to_bytes(self, text: str) -> bytes:
        # Split on special tokens -> pre-tokenize in blocks -> look each block up in the cache
        # -> merge what it lacked, a batch of blocks' worth together -> join.
        cache = self._cache()
        cache.missed.clear()  # what a failed call left
        out: list[bytes | list[bytes]] = []  # a block's packed ids, or their list with holes
        holed: list[tuple[int, list[str], int]] = []  # (place in `out`, block, holes)
        looked_up = 0
        for block in self._blocks(text):
            misses = len(cache.missed)
            ids = list(map(cache.__getitem__, block))
            if len(cache.missed) > misses:
                holed.append((len(out), block, len(cache.missed) - misses))
                out.append(ids)
            else:
                out.append(b"".join(ids))
            looked_up += len(block)
            if looked_up >= BATCH_PRETOKENS:
                self._fill_holes(cache, out, holed)
                looked_up = 0
        self._fill_holes(cache, out, holed)
        return b"".join(out)

    @staticmethod
    def _fill_holes(cache: _PretokenCache, out: list, holed: list[tuple[int, list[str], int]]):
        """Merge the pre-tokens the cache missed, then put their ids in place of the b"" they
        looked up as."""
        cache.merge_missed()
        for k, block, holes in holed:
            ids, i = out[k], -1
            for _ in range(holes):
                i = ids.index(b"", i + 1)
                ids[i] = cache[block[i]]
            out[k] = b"".join(ids)
        holed.clear()
        cache.bound()

    def _cache(self) -> _PretokenCache:
        """This thread's cache (threads that share a tokenizer each have one)."""
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = _PretokenCache(self._merger, self._typecode, self._seed)
        return cache

    def _blocks(self, text: str) -> Iterator[list[str]]:
        """The pre-tokens of `text` in blocks; a special token is a block of its own (the cache
        holds its id, as it holds every token's)."""
        for piece, is_special in split_on_special_tokens(text, self._special_re):
            if is_special:
                yield [piece]
            else:
                yield from pretokenize_blocks(piece)

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
