"""Byte-level BPE tokenizer: encode text to token ids and back, given a vocab and ranked merges."""

import os
from collections.abc import Iterable, Iterator
from itertools import chain, pairwise

from cs336_basics.tokenizer.files import (
    read_merges_txt,
    read_vocab_json,
    write_merges_txt,
    write_vocab_json,
)
from cs336_basics.tokenizer.pretokenize import (
    LAST_SAFE_CUT_RE,
    pretokenize_blocks,
    special_token_regex,
    split_on_special_tokens,
)

# Distinct pre-tokens kept in the encode cache before it is emptied; ~50 MB at most.
CACHE_MAX_ENTRIES = 200_000
# encode_iterable gathers at least this many characters before it encodes a batch.
STREAM_BATCH_CHARS = 1 << 16

_NO_MERGE = 1 << 62  # the "rank" of a pair that no merge joins


class _PretokenCache(dict):
    """pre-token (str) -> token ids (tuple); a miss runs BPE. Emptied when full, so that memory
    stays bounded.

    Pre-tokens are UTF-8 encoded with "surrogateescape", so text decoded from a file with that
    handler (a byte that is not valid UTF-8 becomes a lone surrogate) encodes its original bytes.
    """

    def __init__(self, bpe, max_entries: int):
        super().__init__()
        self._bpe = bpe
        self._max_entries = max_entries

    def __missing__(self, pretoken: str) -> tuple[int, ...]:
        if len(self) >= self._max_entries:
            self.clear()
        ids = self[pretoken] = self._bpe(pretoken.encode("utf-8", "surrogateescape"))
        return ids


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

        # Merges on ids: a pair of ids packed into one int -> its rank; rank -> the merged id.
        self._id_bits = max(self.vocab, default=0).bit_length()
        self._pair_rank: dict[int, int] = {}
        self._merged_id: list[int] = []
        for rank, (left, right) in enumerate(self.merges):
            try:
                left_id, right_id, merged_id = (
                    self.token_to_id[t] for t in (left, right, left + right)
                )
            except KeyError as e:
                raise ValueError(
                    f"merge {rank} ({left!r}, {right!r}) needs token {e.args[0]!r}, "
                    "which is not in the vocab"
                ) from None
            self._pair_rank.setdefault(left_id << self._id_bits | right_id, rank)
            self._merged_id.append(merged_id)
        self._byte_id: list[int | None] = [self.token_to_id.get(bytes([b])) for b in range(256)]
        # Ranks of all byte pairs, indexed by first_byte << 8 | second_byte: BPE's first step.
        self._byte_pair_rank: list[int] = [
            self._pair_rank.get(a << self._id_bits | b, _NO_MERGE)
            if a is not None and b is not None
            else _NO_MERGE
            for a in self._byte_id
            for b in self._byte_id
        ]
        self._cache = _PretokenCache(self._bpe, CACHE_MAX_ENTRIES)

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

    def _bpe(self, pretoken: bytes) -> tuple[int, ...]:
        """Apply merges to one pre-token, lowest rank first, until none applies."""
        # A pre-token that is itself a token is that token, as in GPT-2 and tiktoken. For a vocab
        # made by BPE training the merges end there too (true of all of GPT-2's tokens).
        whole = self.token_to_id.get(pretoken)
        if whole is not None:
            return (whole,)
        byte_id = self._byte_id
        ids = [byte_id[b] for b in pretoken]
        if None in ids:
            missing = next(b for b in pretoken if byte_id[b] is None)
            raise ValueError(
                f"byte {bytes([missing])!r} of pre-token {pretoken!r} is not in the vocab"
            )
        # pair_ranks[i] is the rank of merging ids[i] and ids[i + 1]; the leftmost lowest rank
        # merges first, and after a merge only the two pairs around it change.
        byte_pair_rank = self._byte_pair_rank
        pair_ranks = [byte_pair_rank[a << 8 | b] for a, b in pairwise(pretoken)]
        rank_of, bits, merged_id = self._pair_rank.get, self._id_bits, self._merged_id
        while pair_ranks:
            best = min(pair_ranks)
            if best == _NO_MERGE:
                break
            i = pair_ranks.index(best)
            ids[i] = merged_id[best]
            del ids[i + 1], pair_ranks[i]
            if i > 0:
                pair_ranks[i - 1] = rank_of(ids[i - 1] << bits | ids[i], _NO_MERGE)
            if i < len(pair_ranks):
                pair_ranks[i] = rank_of(ids[i] << bits | ids[i + 1], _NO_MERGE)
        return tuple(ids)

    def _encode_ordinary(self, text: str, ids: list[int]) -> None:
        """Append the ids of `text`, which holds no special token."""
        pretoken_ids = self._cache.__getitem__
        for block in pretokenize_blocks(text):
            ids.extend(chain.from_iterable(map(pretoken_ids, block)))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens (longest match first) become their own ids."""
        ids: list[int] = []
        for piece, is_special in split_on_special_tokens(text, self._special_re):
            if is_special:
                ids.append(self.special_to_id[piece])
            else:
                self._encode_ordinary(piece, ids)
        return ids

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
