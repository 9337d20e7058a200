"""Applying ranked BPE merges to pre-tokens.

Within a pre-token, the leftmost pair with the lowest merge rank merges first, again and again,
until no pair has a merge. A short pre-token (nearly all of them) does this on two plain lists,
which costs a scan of the pre-token per merge. A long one (a run such as `=` x 20,000, an emoji
repeated) would make that quadratic, so it keeps a heap of the ranks present over a linked list
of symbols: the whole pre-token costs O(n log n), in practice about linear. `merge_many` merges
hundreds of short pre-tokens at once with numpy, which costs a third of merging them one by one:
what a fresh tokenizer meets at the start of every file.
"""

from array import array
from collections import defaultdict
from heapq import heapify, heappop, heappush
from itertools import compress, pairwise

import numpy as np

NO_MERGE = 1 << 62  # the "rank" of a pair that no merge joins
# Pre-tokens longer than this take the heap: below it the list scans cost less.
LONG_PRETOKEN_BYTES = 100
# merge_many batches pre-tokens of up to this many bytes (nearly all), so a batch takes at most
# this many steps, when there are at least MERGE_MANY_MIN; others go one by one.
BATCH_MAX_BYTES = 16
MERGE_MANY_MIN = 256


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
        # The same tables as arrays for merge_many; pair ranks are looked up in sorted pairs.
        self._np_byte_id = np.array([-1 if i is None else i for i in self._byte_id], np.int64)
        self._np_byte_pair_rank = np.array(self._byte_pair_rank, np.int64)
        self._np_merged_id = np.array(self._merged_id, np.int64)
        pairs = np.fromiter(self._pair_rank, np.int64, len(self._pair_rank))
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
            missing = bytes([next(b for b in pretoken if byte_id[b] is None)])
            raise ValueError(f"byte {missing!r} of pre-token {pretoken!r} is not in the vocab")
        byte_pair_rank = self._byte_pair_rank
        pair_ranks = [byte_pair_rank[a << 8 | b] for a, b in pairwise(pretoken)]
        if len(pretoken) > LONG_PRETOKEN_BYTES:
            return self._merge_long(ids, pair_ranks)
        # pair_ranks[i] is the rank of merging ids[i] and ids[i + 1]; after a merge only the two
        # pairs around it change.
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

    def _merge_long(self, ids: list[int], pair_ranks: list[int]) -> list[int]:
        """`merge` in O(n log n): symbols stay at their byte positions, linked to their alive
        neighbours; a heap holds the ranks of the pairs present, each with the positions where
        a pair of that rank starts. The lowest rank merges at its positions left to right (one
        sort, no heap work per merge); a position whose pair has changed since it was noted is
        skipped."""
        if min(pair_ranks) == NO_MERGE:  # nothing merges: a run of a byte the vocab never joins
            return ids
        n = len(ids)
        rank_at = [*pair_ranks, NO_MERGE]  # rank of the pair starting at each position
        after = list(range(1, n + 1))  # the next alive position (n: none)
        before = list(range(-1, n - 1))  # the previous alive position (-1: none)
        positions: defaultdict[int, list[int]] = defaultdict(list)
        for i, rank in enumerate(pair_ranks):
            if rank != NO_MERGE:
                positions[rank].append(i)
        ranks = list(positions)
        heapify(ranks)
        rank_of, bits, merged_id = self._pair_rank.get, self._id_bits, self._merged_id

        def note(i: int, rank: int) -> None:
            rank_at[i] = rank
            if rank != NO_MERGE:
                if rank not in positions:
                    heappush(ranks, rank)
                positions[rank].append(i)

        while ranks:
            rank = heappop(ranks)
            todo = sorted(positions.pop(rank))
            merged = merged_id[rank]
            for at, i in enumerate(todo):
                if rank_at[i] != rank:
                    continue
                # Merge the symbol at i with the next one, j, which leaves the list.
                j = after[i]
                ids[i] = merged
                rank_at[j] = NO_MERGE
                k = after[i] = after[j]
                if k < n:
                    before[k] = i
                    note(i, rank_of(merged << bits | ids[k], NO_MERGE))
                else:
                    rank_at[i] = NO_MERGE
                h = before[i]
                if h >= 0:
                    note(h, rank_of(ids[h] << bits | merged, NO_MERGE))
                # A new pair ranked before this one (merges not in creation order) goes first.
                if ranks and ranks[0] < rank:
                    for later in todo[at + 1 :]:
                        if rank_at[later] == rank:
                            note(later, rank)
                    break
        merged_ids = []
        i = 0
        while i < n:
            merged_ids.append(ids[i])
            i = after[i]
        return merged_ids

    def merge_many(self, pretokens: list[bytes], typecode: str) -> list[bytes]:
        """`merge` of each pre-token, its ids packed as `array(typecode)` bytes. The short ones
        (2 to BATCH_MAX_BYTES bytes, not a token themselves) merge together when there are
        MERGE_MANY_MIN or more: each step makes one merge in every one that still has one."""
        batched = [2 <= len(p) <= BATCH_MAX_BYTES and p not in self.token_to_id for p in pretokens]
        batch = list(compress(pretokens, batched))
        if len(batch) < MERGE_MANY_MIN:
            return [array(typecode, self.merge(p)).tobytes() for p in pretokens]
        ids, lengths = self._merge_batch(batch)
        packed = ids.astype(np.dtype(typecode)).tobytes()
        ends = (np.cumsum(lengths) * np.dtype(typecode).itemsize).tolist()
        merged = map(packed.__getitem__, map(slice, [0, *ends[:-1]], ends))
        return [
            next(merged) if in_batch else array(typecode, self.merge(p)).tobytes()
            for p, in_batch in zip(pretokens, batched)
        ]

    def _merge_batch(self, words: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(the merged ids of `words` end to end, how many each has). The words lie end to end
        in flat arrays: `ids`, `ranks` (of the pair starting at each position; NO_MERGE at a
        word's last one) and `word` (whose position it is)."""
        data = np.frombuffer(b"".join(words), np.uint8)
        lengths = np.fromiter(map(len, words), np.int64, len(words))
        ids = self._np_byte_id[data]
        if (ids < 0).any():
            for w in words:
                self.merge(w)  # raises, naming the byte that is not in the vocab
        ranks = np.empty(len(data), np.int64)
        ranks[:-1] = self._np_byte_pair_rank[data[:-1].astype(np.int64) << 8 | data[1:]]
        ranks[np.cumsum(lengths) - 1] = NO_MERGE
        word = np.repeat(np.arange(len(words)), lengths)
        while True:
            best = np.minimum.reduceat(ranks, np.cumsum(lengths) - lengths)
            # In each word with a merge left, the first position that holds its lowest rank.
            hits = np.flatnonzero((ranks == best[word]) & (ranks != NO_MERGE))
            if len(hits) == 0:
                return ids, lengths
            at = hits[np.r_[True, word[hits[1:]] != word[hits[:-1]]]]
            ids[at] = self._np_merged_id[ranks[at]]
            lengths[word[at]] -= 1
            keep = np.ones(len(ids), bool)
            keep[at + 1] = False
            ids, ranks, word = ids[keep], ranks[keep], word[keep]
            at -= np.arange(len(at))  # where the merged tokens are after the deletions
            ranks[at] = NO_MERGE
            # The merged token's pairs with its neighbours in the same word.
            right = at[at + 1 < len(ids)]
            right = right[word[right + 1] == word[right]]
            left = at[at > 0] - 1
            left = left[word[left] == word[left + 1]]
            for i in (right, left):
                pairs = ids[i] << self._id_bits | ids[i + 1]
                found = np.searchsorted(self._sorted_pairs, pairs)
                ranks[i] = np.where(
                    self._sorted_pairs[found] == pairs, self._sorted_pair_ranks[found], NO_MERGE
                )
