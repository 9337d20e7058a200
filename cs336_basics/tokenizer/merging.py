"""Applying ranked BPE merges to pre-tokens: one at a time in Python, or many at once with numpy.

Within a pre-token, the leftmost pair with the lowest merge rank merges first, again and again,
until no pair has a merge. Both paths below do exactly that; the numpy one does one merge in
every pre-token of a batch per step, so its cost per pre-token is a few array operations
instead of a Python loop, which pays once there are thousands of pre-tokens to merge.
"""

from itertools import pairwise
from typing import NoReturn

import numpy as np

NO_MERGE = 1 << 62  # the "rank" of a pair that no merge joins
# Longer pre-tokens (rare: long runs of one character class) go one by one, so that a batch
# needs at most this many steps.
BATCH_MAX_BYTES = 48


class Merger:
    """Ranked merges on token ids, for a vocab `token_to_id` and `merges` in rank order."""

    def __init__(self, token_to_id: dict[bytes, int], merges: list[tuple[bytes, bytes]]):
        self.token_to_id = token_to_id
        # A pair of ids packed into one int -> its rank; rank -> the merged id.
        self._id_bits = max(token_to_id.values(), default=0).bit_length()
        self._pair_rank: dict[int, int] = {}
        self._merged_id: list[int] = []
        for rank, (left, right) in enumerate(merges):
            try:
                left_id, right_id, merged_id = (token_to_id[t] for t in (left, right, left + right))
            except KeyError as e:
                raise ValueError(
                    f"merge {rank} ({left!r}, {right!r}) needs token {e.args[0]!r}, "
                    "which is not in the vocab"
                ) from None
            self._pair_rank.setdefault(left_id << self._id_bits | right_id, rank)
            self._merged_id.append(merged_id)
        self._byte_id: list[int | None] = [token_to_id.get(bytes([b])) for b in range(256)]
        # Ranks of all byte pairs, indexed by first_byte << 8 | second_byte: the first step.
        self._byte_pair_rank: list[int] = [
            self._pair_rank.get(a << self._id_bits | b, NO_MERGE)
            if a is not None and b is not None
            else NO_MERGE
            for a in self._byte_id
            for b in self._byte_id
        ]
        # The same tables as arrays; pair ranks are looked up in sorted packed pairs.
        self._np_byte_id = np.array([-1 if i is None else i for i in self._byte_id], np.int64)
        self._np_byte_pair_rank = np.array(self._byte_pair_rank, np.int64)
        self._np_merged_id = np.array(self._merged_id, np.int64)
        pairs = np.fromiter(self._pair_rank.keys(), np.int64, len(self._pair_rank))
        order = np.argsort(pairs)
        self._sorted_pairs = np.append(pairs[order], NO_MERGE)  # a sentinel past every pair
        ranks = np.fromiter(self._pair_rank.values(), np.int64, len(self._pair_rank))
        self._sorted_pair_ranks = np.append(ranks[order], NO_MERGE)

    def merge(self, pretoken: bytes) -> list[int]:
        """Token ids of one pre-token."""
        # A pre-token that is itself a token is that token, as in GPT-2 and tiktoken. For a vocab
        # made by BPE training the merges end there too (true of all of GPT-2's tokens).
        whole = self.token_to_id.get(pretoken)
        if whole is not None:
            return [whole]
        byte_id = self._byte_id
        ids = [byte_id[b] for b in pretoken]
        if None in ids:
            self._raise_missing_byte(pretoken)
        # pair_ranks[i] is the rank of merging ids[i] and ids[i + 1]; after a merge only the two
        # pairs around it change.
        byte_pair_rank = self._byte_pair_rank
        pair_ranks = [byte_pair_rank[a << 8 | b] for a, b in pairwise(pretoken)]
        rank_of, bits, merged_id = self._pair_rank.get, self._id_bits, self._merged_id
        while pair_ranks:
            best = min(pair_ranks)
            if best == NO_MERGE:
                break
            i = pair_ranks.index(best)
            ids[i] = merged_id[best]
            del ids[i + 1], pair_ranks[i]
            if i > 0:
                pair_ranks[i - 1] = rank_of(ids[i - 1] << bits | ids[i], NO_MERGE)
            if i < len(pair_ranks):
                pair_ranks[i] = rank_of(ids[i] << bits | ids[i + 1], NO_MERGE)
        return ids

    def _raise_missing_byte(self, pretoken: bytes) -> NoReturn:
        missing = next(b for b in pretoken if self._byte_id[b] is None)
        raise ValueError(f"byte {bytes([missing])!r} of pre-token {pretoken!r} is not in the vocab")

    def merge_many(self, pretokens: list[bytes], dtype: np.dtype) -> list[bytes]:
        """`merge` of each pre-token, as ids packed into bytes of `dtype`, in input order."""
        lengths = np.fromiter(map(len, pretokens), np.int64, len(pretokens))
        whole = np.fromiter(map(self.token_to_id.__contains__, pretokens), bool, len(pretokens))
        batched = (lengths >= 2) & (lengths <= BATCH_MAX_BYTES) & ~whole
        batch = np.flatnonzero(batched)
        out: list[bytes] = [b""] * len(pretokens)
        for i in np.flatnonzero(~batched).tolist():
            out[i] = np.array(self.merge(pretokens[i]), dtype).tobytes()
        if len(batch) == 0:
            return out
        parts = list(self._merge_batch([pretokens[i] for i in batch.tolist()]))
        words, counts, ids = (np.concatenate(p) for p in zip(*parts))
        # Word w's ids lie at ids[first[w]:][:counts[w]], words in the order they finished; lay
        # them out in input order, then cut the packed bytes word by word.
        first = np.cumsum(counts) - counts
        order = np.argsort(words)
        counts, first = counts[order], first[order]
        ends = np.cumsum(counts)
        gather = np.arange(ends[-1]) + np.repeat(first - (ends - counts), counts)
        packed = ids[gather].astype(dtype).tobytes()
        byte_ends = (ends * dtype.itemsize).tolist()
        byte_starts = [0, *byte_ends[:-1]]
        for i, ids_bytes in zip(
            batch.tolist(), map(packed.__getitem__, map(slice, byte_starts, byte_ends))
        ):
            out[i] = ids_bytes
        return out

    def _pair_ranks(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        pairs = left << self._id_bits | right
        at = np.searchsorted(self._sorted_pairs, pairs)
        return np.where(self._sorted_pairs[at] == pairs, self._sorted_pair_ranks[at], NO_MERGE)

    def _merge_batch(self, words: list[bytes]):
        """Yield (word indices, their lengths in tokens, their ids concatenated) as words finish.

        Words (each of 2 or more bytes, none a token itself) lie end to end in flat arrays:
        `ids`, `ranks` (of the pair starting at each position; NO_MERGE at a word's last
        position) and `word` (which active word a position belongs to). Each step merges the
        leftmost lowest-ranked pair of every word that still has one.
        """
        data = np.frombuffer(b"".join(words), np.uint8)
        ids = self._np_byte_id[data]
        if (ids < 0).any():
            self._raise_missing_byte(
                next(w for w in words if None in map(self._byte_id.__getitem__, w))
            )
        lengths = np.fromiter(map(len, words), np.int64, len(words))
        ranks = np.empty(len(data), np.int64)
        ranks[:-1] = self._np_byte_pair_rank[data[:-1].astype(np.int64) << 8 | data[1:]]
        ranks[np.cumsum(lengths) - 1] = NO_MERGE
        word = np.repeat(np.arange(len(words)), lengths)
        alive = np.arange(len(words))  # the input index of each active word
        while True:
            best = np.minimum.reduceat(ranks, np.cumsum(lengths) - lengths)
            finished = best == NO_MERGE
            if finished.any():
                at_finished = finished[word]
                yield alive[finished], lengths[finished], ids[at_finished]
                if finished.all():
                    return
                active = ~finished
                ids, ranks = ids[~at_finished], ranks[~at_finished]
                word = (np.cumsum(active) - 1)[word[~at_finished]]
                alive, lengths, best = alive[active], lengths[active], best[active]
            # One merge per word, at the first position holding its lowest rank.
            hits = np.flatnonzero(ranks == best[word])
            first_hit = np.ones(len(hits), bool)
            first_hit[1:] = word[hits[1:]] != word[hits[:-1]]
            at = hits[first_hit]
            ids[at] = self._np_merged_id[ranks[at]]
            keep = np.ones(len(ids), bool)
            keep[at + 1] = False
            ids, ranks, word = ids[keep], ranks[keep], word[keep]
            lengths -= 1
            at -= np.arange(len(at))  # where the merged tokens are after the deletions
            # New pairs: the merged token with its right neighbour, if any...
            right = at + 1
            has_right = right < len(ids)
            has_right[has_right] = word[right[has_right]] == word[at[has_right]]
            ranks[at] = NO_MERGE
            r = at[has_right]
            ranks[r] = self._pair_ranks(ids[r], ids[r + 1])
            # ...and its left neighbour with it, if any.
            has_left = at > 0
            has_left[has_left] = word[at[has_left] - 1] == word[at[has_left]]
            left = at[has_left] - 1
            ranks[left] = self._pair_ranks(ids[left], ids[left + 1])
