"""BPE training: exact equality with a naive trainer written here, the handout's example, bad input."""

import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cs336_basics.tokenizer.bpe import _reversed_order_key, bpe_merges
from cs336_basics.tokenizer.pretokenize import chunk_ranges

from .adapters import run_train_bpe

EOT = "<|endoftext|>"


# --- an independent, deliberately naive trainer: recount every pair at every step ---------------

NAIVE_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def naive_pretokens(data: bytes, special_tokens: list[str]) -> Counter:
    text = data.decode("utf-8", "surrogateescape")  # the trainer's documented handling of bad bytes
    pieces = [text]
    if special_tokens:
        alternatives = "|".join(
            regex.escape(t) for t in sorted(special_tokens, key=len, reverse=True)
        )
        pieces = regex.split(alternatives, text)
    return Counter(
        t.encode("utf-8", "surrogateescape")
        for piece in pieces
        for t in regex.findall(NAIVE_PATTERN, piece)
    )


def naive_train_bpe(data: bytes, vocab_size: int, special_tokens: list[str]):
    words = Counter(
        {tuple(bytes([c]) for c in t): n for t, n in naive_pretokens(data, special_tokens).items()}
    )
    if not words:
        raise ValueError("no text")
    merges = []
    while len(merges) < vocab_size - 256 - len(special_tokens):
        pairs: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged: Counter = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    vocab = {i: t.encode() for i, t in enumerate(special_tokens)}
    vocab.update({len(special_tokens) + b: bytes([b]) for b in range(256)})
    for left, right in merges:
        vocab[len(vocab)] = left + right
    return vocab, merges


def _write(tmp: Path, data: bytes | str) -> Path:
    path = tmp / "corpus.txt"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def english_like(n_bytes: int, seed: int = 0, docs: bool = True) -> str:
    """Deterministic text with English-like word frequencies, punctuation, digits, contractions."""
    rng = random.Random(seed)
    common = (
        "the a and of to in was he she it they said with for on but not you his her had".split()
    )
    rare = [
        "".join(rng.choice("etaoinshrdlucmfwypvbgkjqxz") for _ in range(rng.randint(2, 9)))
        for _ in range(600)
    ]
    tails = ["", "", "", "", ",", ".", "'s", "n't", "!", "?"]
    parts, size = [], 0
    while size < n_bytes:
        word = rng.choice(common) if rng.random() < 0.45 else rng.choice(rare)
        if rng.random() < 0.1:
            word = word.capitalize()
        if rng.random() < 0.02:
            word = str(rng.randint(0, 2025))
        word += rng.choice(tails)
        sep = rng.choices(
            [" ", "\n", "\n\n", f"\n{EOT}\n" if docs else "\n", "  "], [90, 4, 2, 2, 1]
        )[0]
        parts.append(word + sep)
        size += len(word) + len(sep)
    return "".join(parts)


# --- the handout's worked example ----------------------------------------------------------------

HANDOUT_MERGES = [
    (b"s", b"t"), (b"e", b"st"), (b"o", b"w"), (b"l", b"ow"), (b"w", b"est"), (b"n", b"e"),
    (b"ne", b"west"), (b"w", b"i"), (b"wi", b"d"), (b"wid", b"est"), (b"low", b"e"), (b"lowe", b"r"),
]  # fmt: skip


def test_handout_example_merge_core():
    # whitespace pre-tokenization as in the handout: low x5, lower x2, widest x3, newest x6;
    # 12 merges reduce every word to one token, so asking for more stops early
    words = {b"low": 5, b"lower": 2, b"widest": 3, b"newest": 6}
    assert bpe_merges(words, 6) == HANDOUT_MERGES[:6]
    assert bpe_merges(words, 100) == HANDOUT_MERGES


def test_handout_example_end_to_end_stops_early(tmp_path):
    # special tokens between the words stand in for the handout's whitespace splitting
    words = "low low low low low lower lower widest widest widest newest newest newest newest newest newest"
    path = _write(tmp_path, EOT.join(words.split()))
    vocab, merges = run_train_bpe(path, 1000, [EOT])
    assert merges == HANDOUT_MERGES
    assert len(vocab) == 1 + 256 + len(HANDOUT_MERGES)
    assert vocab[257 + 6] == b"newest" and vocab[len(vocab) - 1] == b"lower"


# --- equality with the naive trainer -------------------------------------------------------------


def test_train_bpe(tmp_path):
    data = english_like(40_000, seed=1).encode()
    path = _write(tmp_path, data)
    expected = naive_train_bpe(data, 500, [EOT])
    assert run_train_bpe(path, 500, [EOT]) == expected
    assert (
        run_train_bpe(path, 500, [EOT], num_workers=2, chunk_size=3000, progress=True) == expected
    )


def test_train_bpe_no_special_tokens_many_chunks(tmp_path):
    # without special tokens the chunks are cut at spaces, which must not change any pre-token
    data = english_like(20_000, seed=2, docs=False).encode()
    path = _write(tmp_path, data)
    assert run_train_bpe(path, 400, [], num_workers=2, chunk_size=700) == naive_train_bpe(
        data, 400, []
    )


def test_mixed_ascii_pretokenization_counts_exactly(tmp_path):
    """Text that is not all ASCII is pre-tokenized in stretches, the ASCII ones by a faster
    pattern: training equals the naive trainer."""
    rng = random.Random(3)
    tails = ["", "", "", "é", "日本", " \u00a0", "🙂", "\t\n "]
    text = " ".join(w + rng.choice(tails) for w in english_like(6000, seed=3).split(" "))
    data = text.encode() + b" bad \xff byte \xc3"
    path = _write(tmp_path, data)
    assert run_train_bpe(path, 300, [EOT], num_workers=1) == naive_train_bpe(data, 300, [EOT])


SPECIALS = ["<|endoftext|>", "<|x|>", "<|x|><|x|>"]  # the last two overlap: longest must win
text_pieces = st.one_of(
    st.text(alphabet="ab \n", max_size=12),  # runs like aaaa: overlapping pairs
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8),
    st.sampled_from(
        ["hello", " world", "'s", "'ll", "  ", "\t", "123", "é", "日本", "🙂", "\r\n", "!!"]
    ),
    st.sampled_from(SPECIALS),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(text_pieces, max_size=40),
    specials=st.sampled_from([[], SPECIALS[:1], SPECIALS]),
    extra=st.integers(0, 40),
    chunk_size=st.sampled_from([None, 1, 5, 17]),
)
def test_train_bpe_matches_naive_single_process(pieces, specials, extra, chunk_size):
    data = "".join(pieces).encode()
    _check_against_naive(
        data, specials, 256 + len(specials) + extra, num_workers=1, chunk_size=chunk_size
    )


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(text_pieces, min_size=5, max_size=60), chunk_size=st.sampled_from([1, 9, 40])
)
def test_train_bpe_matches_naive_two_workers(pieces, chunk_size):
    data = "".join(pieces).encode()
    _check_against_naive(data, SPECIALS, 256 + 3 + 30, num_workers=2, chunk_size=chunk_size)


def _check_against_naive(data: bytes, specials, vocab_size, **options):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), data)
        try:
            expected = naive_train_bpe(data, vocab_size, specials)
        except ValueError:
            with pytest.raises(ValueError, match="no text"):
                run_train_bpe(path, vocab_size, specials, **options)
            return
        assert run_train_bpe(path, vocab_size, specials, **options) == expected


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(
            ["a", "Z", "7", " ", "  ", "\t", "\n", "\u00a0", "'s", "!", "é", *SPECIALS]
        ),
        max_size=60,
    ),
    # "|>!" and "a a" overlap other text and specials: a cut may never fall inside an occurrence
    specials=st.sampled_from([[], SPECIALS[:1], SPECIALS[1:], ["<|x|>", "|>!", "a a"]]),
    chunk_size=st.integers(1, 30),
)
def test_chunk_cuts_never_change_pretokens(pieces, specials, chunk_size):
    data = "".join(pieces).encode()
    with tempfile.TemporaryDirectory() as tmp:
        ranges = chunk_ranges(_write(Path(tmp), data), chunk_size, specials)
    assert [r[0] for r in ranges[1:]] == [r[1] for r in ranges[:-1]] and ranges[-1][1] == len(data)
    assert sum(
        (naive_pretokens(data[s:e], specials) for s, e in ranges), Counter()
    ) == naive_pretokens(data, specials)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4), st.binary(max_size=4), st.binary(max_size=4), st.binary(max_size=4))
def test_heap_key_reverses_bytes_pair_order(l1, r1, l2, r2):
    key1 = _reversed_order_key(l1) + _reversed_order_key(r1)
    key2 = _reversed_order_key(l2) + _reversed_order_key(r2)
    assert ((l1, r1) > (l2, r2)) == (key1 < key2)


def test_invalid_utf8_trains_on_the_raw_bytes(tmp_path):
    data = b"caf\xe9 caf\xe9 \xff\xfe\xff\xfe\xff\xfe ok \xc3( \xe2\x82 done" * 5
    path = _write(tmp_path, data)
    vocab, merges = run_train_bpe(path, 300, [EOT])
    assert (vocab, merges) == naive_train_bpe(data, 300, [EOT])
    assert (b"\xff", b"\xfe") in merges  # the malformed bytes themselves, not U+FFFD
    assert not any(b"\xef\xbf\xbd" in token for token in vocab.values())


# --- special tokens ------------------------------------------------------------------------------


def test_train_bpe_special_tokens(tmp_path):
    specials = [EOT, "<|pad|>"]
    path = _write(tmp_path, english_like(30_000, seed=3) + "<|pad|>" * 50)
    vocab, merges = run_train_bpe(path, 600, specials)
    assert [vocab[0], vocab[1]] == [b"<|endoftext|>", b"<|pad|>"]
    assert [vocab[2 + b] for b in range(256)] == [bytes([b]) for b in range(256)]
    assert not any(b"<|" in token or b"|>" in token for i, token in vocab.items() if i >= 2)
    # the check can fail: without the special tokens their pieces are merged
    vocab_plain, _ = run_train_bpe(path, 600, [])
    assert any(b"<|" in token for token in vocab_plain.values())


def test_special_tokens_are_never_split_or_counted_across_chunks(tmp_path):
    data = f"aa{EOT}aa{EOT}".encode() * 300
    path = _write(tmp_path, data)
    ranges = chunk_ranges(path, 50, [EOT])
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(end == start for (_, end), (start, _) in zip(ranges, ranges[1:]))
    assert len(ranges) > 10 and all(data.startswith(EOT.encode(), start) for start, _ in ranges[1:])
    assert run_train_bpe(path, 400, [EOT], num_workers=2, chunk_size=50) == naive_train_bpe(
        data, 400, [EOT]
    )


def test_chunks_without_special_tokens_cut_before_a_space_after_a_word(tmp_path):
    data = english_like(5_000, seed=4, docs=False).encode()
    path = _write(tmp_path, data)
    ranges = chunk_ranges(path, 100, [])
    assert len(ranges) > 20
    assert all(
        data[start : start + 1] == b" " and data[start - 1 : start].isalnum()
        for start, _ in ranges[1:]
    )


# --- speed (generous bound; the real targets live in bench/) -------------------------------------


def test_train_bpe_speed(tmp_path):
    path = _write(tmp_path, english_like(130_000, seed=5))
    start = time.perf_counter()
    run_train_bpe(path, 500, [EOT])
    assert time.perf_counter() - start < 1.5


# --- bad input -----------------------------------------------------------------------------------


def test_missing_file_raises_oserror_naming_it(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(OSError, match="nope.txt"):
        run_train_bpe(missing, 300, [EOT])
    with pytest.raises(OSError):
        run_train_bpe(tmp_path, 300, [EOT])  # a folder


def test_vocab_size_too_small_names_the_minimum(tmp_path):
    path = _write(tmp_path, "hello world")
    with pytest.raises(ValueError, match="at least 258"):
        run_train_bpe(path, 257, [EOT, "<|pad|>"])
    vocab, merges = run_train_bpe(path, 258, [EOT, "<|pad|>"])
    assert merges == [] and len(vocab) == 258


@pytest.mark.parametrize("content", ["", EOT, EOT * 3])
def test_empty_corpus_raises(tmp_path, content):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match="no text"):
        run_train_bpe(path, 300, [EOT])


def test_empty_special_token_raises(tmp_path):
    path = _write(tmp_path, "hello")
    with pytest.raises(ValueError, match="non-empty"):
        run_train_bpe(path, 300, [EOT, ""])


def test_early_stop_when_no_pair_is_left(tmp_path):
    path = _write(
        tmp_path, "a b c d e f"
    )  # pre-tokens "a", " b", ...: one merge each, ties by bytes
    vocab, merges = run_train_bpe(path, 400, [])
    assert merges == [(b" ", b"f"), (b" ", b"e"), (b" ", b"d"), (b" ", b"c"), (b" ", b"b")]
    assert len(vocab) == 256 + 5
