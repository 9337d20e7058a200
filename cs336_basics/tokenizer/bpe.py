"""Byte-level BPE training: count pre-tokens once, then merge incrementally.

Each merge touches only the words that contain the merged pair: their neighbouring pair counts
are adjusted and the words that gain a new pair are indexed under it. The most frequent pair
comes from a heap with lazy invalidation, so no step rescans all pairs.
"""

import heapq
import os
from collections import defaultdict

from tqdm import tqdm

from cs336_basics.tokenizer.pretokenize import count_file_pretokens, special_token_regex

# Below this many bytes one process counts the whole corpus: a worker would cost about as much
# as the counting it takes over.
_PARALLEL_MIN_BYTES = 1 << 20


def _reversed_order_key(token: bytes) -> bytes:
    """A key whose byte-wise order is the reverse of `token`'s, also for concatenations.

    Every byte c becomes (0, 255 - c) and the end of the token 1, which sorts after any (0, x):
    so a longer token with the same prefix sorts first, as it must when bigger wins.
    """
    return bytes(x for c in token for x in (0, 255 - c)) + b"\x01"


def bpe_merges(
    word_counts: dict[bytes, int], num_merges: int, progress: bool = False
) -> list[tuple[bytes, bytes]]:
    """Up to `num_merges` BPE merges learned from pre-token counts, in creation order.

    Each step merges the pair with the highest frequency-weighted count inside words; ties go to
    the lexicographically greater `(left, right)` bytes pair. Stops early when no pair is left.
    """
    # A symbol is one character standing for a distinct byte string (chr(0..255): single bytes),
    # so a word is a str and merging a pair in it is `str.replace`, which works left to right
    # without overlaps exactly as BPE does. Two merges that make the same bytes share a symbol,
    # as they would if words were counted as tuples of bytes.
    token = {chr(i): bytes([i]) for i in range(256)}
    symbol = {t: c for c, t in token.items()}
    order_key = {c: _reversed_order_key(t) for c, t in token.items()}

    words = [w.decode("latin-1") for w in word_counts]
    counts = list(word_counts.values())
    # pair (2-char str) -> words that held it when indexed, once per occurrence; entries for
    # words that lost the pair since are skipped when merging
    where: defaultdict[str, list[int]] = defaultdict(list)
    for w, word in enumerate(words):
        for i in range(len(word) - 1):
            where[word[i : i + 2]].append(w)
    pair_count = defaultdict(int, {p: sum(map(counts.__getitem__, ws)) for p, ws in where.items()})
    # min-heap of (-count, reversed bytes order, pair): most frequent first, then greatest bytes
    heap = [(-n, order_key[p[0]] + order_key[p[1]], p) for p, n in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[bytes, bytes]] = []
    with tqdm(total=num_merges, desc="merge", unit="merge", disable=not progress) as bar:
        while heap and len(merges) < num_merges:
            neg, key, pair = heapq.heappop(heap)
            n = pair_count.get(pair, 0)
            if n != -neg or n <= 0:  # stale: counts only fall, except for the pairs pushed below
                if n > 0:
                    heapq.heappush(heap, (-n, key, pair))
                continue
            left, right = token[pair[0]], token[pair[1]]
            merges.append((left, right))
            bar.update()
            z = symbol.get(left + right)
            if z is None:
                z = symbol[left + right] = chr(len(token))
                token[z] = left + right
                order_key[z] = order_key[pair[0]][:-1] + order_key[pair[1]]
            gained = _merge_pair(words, counts, set(where.pop(pair)), pair, z, pair_count, where)
            del pair_count[pair]
            for p in gained:
                if (n := pair_count[p]) > 0:
                    heapq.heappush(heap, (-n, order_key[p[0]] + order_key[p[1]], p))
    return merges


def _merge_pair(words, counts, word_ids, pair: str, z: str, pair_count, where) -> set[str]:
    """Replace `pair` by the symbol `z` in the given words; update the neighbouring pair counts.

    Returns the pairs whose count went up (all contain z). The merged pair's own count is left
    for the caller to drop.
    """
    a, b = pair
    gained = set()
    for w in word_ids:
        word = words[w]
        i = word.find(pair)
        if i < 0:
            continue
        n = counts[w]
        last = len(word) - 2
        end = -1  # where the previous occurrence ended: its z is this one's left neighbour
        while i >= 0:
            if i:
                prev = z if i == end else word[i - 1]
                pair_count[prev + a] -= n
                p = prev + z
                pair_count[p] += n
                where[p].append(w)
                gained.add(p)
            if i < last:
                nxt = word[i + 2]
                pair_count[b + nxt] -= n
                p = z + nxt
                pair_count[p] += n
                where[p].append(w)
                gained.add(p)
            end = i + 2
            i = word.find(pair, end)
        words[w] = word.replace(pair, z)
    return gained


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: list[str],
    *,
    num_workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE tokenizer on a UTF-8 text file.

    Args:
        input_path: the training text. Bytes that are not valid UTF-8 are kept as they are
            (they pre-tokenize like punctuation) rather than raising or becoming U+FFFD.
        vocab_size: total vocabulary size: special tokens + 256 bytes + merges.
        special_tokens: strings that split the text and are never merged across; they get ids
            0..k-1 in the order given.
        num_workers: processes that count pre-tokens (default: all cores). Files under 1 MiB
            use one process unless `chunk_size` is given.
        chunk_size: bytes per chunk read by the pre-tokenizer (default: the file split into about
            4 chunks per worker, 256 KiB to 4 MiB each).
        progress: show tqdm bars for pre-tokenization and merges.

    Returns:
        `(vocab, merges)`: `vocab` maps id -> token bytes (special tokens, then the 256 bytes,
        then one token per merge in creation order); `merges` lists `(left, right)` in order.
    """
    special_tokens = list(dict.fromkeys(special_tokens))
    special_token_regex(special_tokens)  # rejects an empty special token before any work
    num_merges = vocab_size - 256 - len(special_tokens)
    if num_merges < 0:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must be at least {256 + len(special_tokens)} "
            f"(256 byte tokens + {len(special_tokens)} special tokens)"
        )
    num_workers = num_workers or os.cpu_count() or 1
    if num_workers < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(
            f"num_workers and chunk_size must be positive; got {num_workers}, {chunk_size}"
        )
    try:
        size = os.path.getsize(input_path)
        if chunk_size is None:
            if size < _PARALLEL_MIN_BYTES:
                num_workers = 1
            # bounded chunks keep each process's transient list of pre-tokens small (~10x the chunk)
            chunk_size = min(max(-(-size // (4 * num_workers)), 1 << 18), 1 << 22)
        word_counts = count_file_pretokens(
            input_path, special_tokens, num_workers, chunk_size, progress
        )
    except OSError as e:
        raise OSError(
            e.errno, f"cannot read the BPE training text ({e.strerror})", os.fspath(input_path)
        ) from e
    if not word_counts:
        raise ValueError(
            f"{input_path} has no text to train on: it is empty or holds only special tokens"
        )

    merges = bpe_merges(word_counts, num_merges, progress)
    vocab = {i: t.encode("utf-8") for i, t in enumerate(special_tokens)}
    offset = len(vocab)
    vocab.update((offset + b, bytes([b])) for b in range(256))
    vocab.update((offset + 256 + i, left + right) for i, (left, right) in enumerate(merges))
    return vocab, merges
