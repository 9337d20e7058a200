"""Applying ranked BPE merges to one pre-token.

Within a pre-token, the leftmost pair with the lowest merge rank merges first, again and again,
until no pair has a merge. A short pre-token (nearly all of them) does this on two plain lists,
which costs a scan of the pre-token per merge. A long one (a run such as `=` x 20,000, an emoji
repeated) would make that quadratic, so it keeps a heap of the ranks present over a linked list
of symbols: the whole pre-token costs O(n log n), in practice about linear.
"""

from collections import defaultdict
from heapq import heapify, heappop, heappush
from itertools import pairwise

NO_MERGE = 1 << 62  # the "rank" of a pair that no merge joins
# Pre-tokens longer than this take the heap: below it the list scans cost less.
LONG_PRETOKEN_BYTES = 100


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
