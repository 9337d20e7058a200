"""Tokenizer: encode/decode against tiktoken and a naive merge loop, streaming, files, binarization.

The vocab is trained here by a naive BPE loop on a generated corpus (independent of the
project's trainer), so the tests need nothing from outside the repository.
"""

import json
import random
import sys
import time
import tracemalloc
from array import array
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from cs336_basics.tokenizer import merging
from cs336_basics.tokenizer import pretokenize as pretokenize_module
from cs336_basics.tokenizer import tokenizer as tokenizer_module
from cs336_basics.tokenizer.binarize import encode_file
from cs336_basics.tokenizer.merging import Merger
from cs336_basics.tokenizer.pretokenize import (
    ASCII_PRETOKEN_RE,
    GPT2_PATTERN,
    PRETOKEN_RE,
    pretokenize_blocks,
)
from cs336_basics.tokenizer.tokenizer import Tokenizer

from .adapters import get_tokenizer

EOT = "<|endoftext|>"

_WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "the a cat dog sat on mat and ran away quickly it is was that lower lowest newer newest "
    "wide widest don't we'll they're I've she'd it's 42 2025 3.14 1,000,000 naïve café "
    "résumé über straße 日本語 テキスト 中文 文本 русский текст مرحبا עברית 🙂 🚀👍 😀😃 "
    "def return print(x) {} [] == != ->"
).split()
TEXTS = [
    "Hello, world! How are you doing today?",
    "the cat sat on the mat. The dog ran away quickly.\n\nNew paragraph here.",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\n  mixed \t whitespace runs\n    indented line\n",
    "digits 1234567890 and 3.14159 and 1,000,000 and 2025-11-26",
    "naïve café résumé über straße — “quotes” and ‘apostrophes’",
    "日本語のテキストと中文文本 русский текст مرحبا עברית",
    "emoji 🙂🚀👍 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👋🏽",
    "def f(x):\n    return {'a': [1, 2], \"b\": x ** 2}  # comment\n\tif x != 0: print(x)\n",
    "I'm sure they're here; we'll see what you've done, she'd say it's DON'T",
    "a" * 200 + " " + "ab" * 100 + " " + "\n" * 30 + " " * 30 + "!" * 40,
]


def naive_train(text: str, num_merges: int) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Plain BPE training (no specials): ids 0..255 are the bytes, then merges in creation order."""
    word_counts = Counter(PRETOKEN_RE.findall(text))
    words = {w: [bytes([b]) for b in w.encode("utf-8")] for w in word_counts}
    merges: list[tuple[bytes, bytes]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for w, parts in words.items():
            for pair in pairwise(parts):
                pairs[pair] += word_counts[w]
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        for w, parts in words.items():
            i, out = 0, []
            while i < len(parts):
                if tuple(parts[i : i + 2]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            words[w] = out
    vocab = {i: bytes([i]) for i in range(256)}
    for left, right in merges:
        vocab[len(vocab)] = left + right
    assert len(set(vocab.values())) == len(vocab), "this corpus made a token twice; change it"
    return vocab, merges


def naive_merge(word: bytes, merges: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Reference: merge the single leftmost lowest-rank pair at a time until no merge applies."""
    rank = {m: r for r, m in enumerate(merges)}
    parts = [bytes([b]) for b in word]
    while True:
        ranked = [(rank[p], i) for i, p in enumerate(pairwise(parts)) if p in rank]
        if not ranked:
            return parts
        _, i = min(ranked)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def naive_encode(
    text: str, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], specials: list[str]
) -> list[int]:
    """Reference: split on specials (leftmost, then longest), then merge each pre-token."""
    token_id = {b: i for i, b in vocab.items()}
    by_length = sorted(specials, key=len, reverse=True)
    ids: list[int] = []

    def ordinary(piece: str) -> None:
        for pre in PRETOKEN_RE.findall(piece):
            ids.extend(token_id[p] for p in naive_merge(pre.encode("utf-8"), merges))

    start = i = 0
    while i < len(text):
        special = next((s for s in by_length if text.startswith(s, i)), None)
        if special is None:
            i += 1
            continue
        ordinary(text[start:i])
        ids.append(token_id[special.encode("utf-8")])
        i = start = i + len(special)
    ordinary(text[start:])
    return ids


def make_corpus(num_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    while num_words > 0:
        n = rng.randint(1, 12)
        lines.append(
            " ".join(rng.choice(_WORDS) for _ in range(n)) + rng.choice([".", "!", "?", ",", ""])
        )
        num_words -= n
    return "\n".join(lines) + "\n" + "".join(TEXTS)


@pytest.fixture(scope="module")
def trained() -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    return naive_train(make_corpus(3000), 300)


def tiktoken_for(tok: Tokenizer, name: str = "test") -> tiktoken.Encoding:
    specials = {s: tok.special_to_id[s] for s in tok.special_tokens}
    ranks = {b: i for i, b in tok.vocab.items() if i not in specials.values()}
    return tiktoken.Encoding(
        name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


@pytest.fixture(scope="module")
def tok(trained) -> Tokenizer:
    return get_tokenizer(*trained, special_tokens=[EOT])


@pytest.fixture(scope="module")
def enc(tok) -> tiktoken.Encoding:
    return tiktoken_for(tok)


# --- round trips -------------------------------------------------------------------------------


def test_roundtrip_empty(tok):
    assert tok.encode("") == []
    assert tok.decode([]) == ""


def test_roundtrip_single_char(tok):
    for ch in ["a", " ", "\n", "é", "日", "🙂", "\x00"]:
        ids = tok.encode(ch)
        assert tok.decode(ids) == ch


def test_roundtrip_ascii(tok):
    text = "".join(chr(c) for c in range(128)) * 3
    assert tok.decode(tok.encode(text)) == text


def test_roundtrip_unicode(tok):
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_roundtrip_random_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


# --- encoding matches tiktoken and a naive merge loop ------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_tiktoken(tok, enc, text):
    assert tok.encode(text) == enc.encode(text)


def test_encode_with_special_tokens_matches_tiktoken(tok, enc):
    text = EOT.join(TEXTS) + EOT + " " + EOT + "\n" + EOT + EOT + "<|endoftext" + "|endoftext|>"
    ids = tok.encode(text)
    assert ids == enc.encode(text, allowed_special="all")
    assert ids.count(tok.special_to_id[EOT]) == len(TEXTS) + 3
    assert tok.decode(ids) == text


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.text(), st.sampled_from(_WORDS + [" ", "  ", "\n", "\t", EOT]))).map(
        "".join
    )
)
def test_random_text_matches_tiktoken(tok, enc, text):
    assert tok.encode(text) == enc.encode(text, allowed_special="all")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(), st.sampled_from(_WORDS + ["\n\n", EOT]))).map("".join))
def test_encode_matches_naive_merges(trained, tok, text):
    assert tok.encode(text) == naive_encode(text, tok.vocab, trained[1], [EOT])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.text(alphabet="ab ", max_size=300).map(str.encode),  # runs: overlapping pairs
            st.sampled_from(_WORDS).map(lambda w: (" " + w).encode() * 40),
        ),
        max_size=20,
    )
)
def test_long_pretokens_merge_as_short_ones(trained, words):
    """The heap over linked symbols (long pre-tokens) and the list scans (short ones) both give
    the naive merge loop's tokens, for words of any length, whole tokens and single bytes."""
    merger = Merger(Tokenizer(*trained).token_to_id, trained[1])
    token_id = Tokenizer(*trained).token_to_id
    with pytest.MonkeyPatch.context() as patch:
        for long_from in (0, 10**9):  # every pre-token takes the heap, then none does
            patch.setattr(merging, "LONG_PRETOKEN_BYTES", long_from)
            for word in words:
                expected = [token_id[t] for t in naive_merge(word, trained[1])]
                assert merger.merge(word) == ([token_id[word]] if word in token_id else expected)


@st.composite
def merges_in_any_order(draw) -> list[tuple[bytes, bytes]]:
    """Merges of tokens made from a, b and c, in an order that BPE training would not make."""
    tokens, merges = [b"a", b"b", b"c"], []
    for _ in range(draw(st.integers(1, 15))):
        pair = (draw(st.sampled_from(tokens)), draw(st.sampled_from(tokens)))
        if pair not in merges:
            merges.append(pair)
            tokens.append(pair[0] + pair[1])
    return draw(st.permutations(merges))


@settings(max_examples=300, deadline=None)
@given(merges_in_any_order(), st.lists(st.text("abc", min_size=2, max_size=300), max_size=4))
def test_merges_in_any_order_give_the_naive_loops_tokens(merges, words):
    """Where a merge makes a pair ranked before itself, that pair merges next (in the heap too)."""
    vocab = {i: bytes([i]) for i in range(256)}
    for left, right in merges:
        vocab[len(vocab)] = left + right
    tok = Tokenizer(vocab, merges)
    merger = Merger(tok.token_to_id, merges)
    with pytest.MonkeyPatch.context() as patch:
        for long_from in (0, 10**9):
            patch.setattr(merging, "LONG_PRETOKEN_BYTES", long_from)
            for word in map(str.encode, words):
                if word not in tok.token_to_id:
                    expected = [tok.token_to_id[t] for t in naive_merge(word, merges)]
                    assert merger.merge(word) == expected


def test_merge_names_a_missing_byte(monkeypatch):
    merger = Merger({bytes([i]): i for i in range(255)}, [])
    for long_from in (0, 10**9):
        monkeypatch.setattr(merging, "LONG_PRETOKEN_BYTES", long_from)
        with pytest.raises(ValueError, match=r"byte b'\\xff'"):
            merger.merge(b"ok\xffok")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=20),
            st.text(alphabet="ab ", max_size=20).map(str.encode),  # runs: overlapping pairs
            st.sampled_from(_WORDS).map(lambda w: (" " + w).encode()),
        ),
        max_size=80,
    )
)
def test_merge_many_equals_merge_one_by_one(trained, words):
    """The numpy batch (one merge in every word per step) gives exactly `merge`, for words of
    any length (long ones go one by one), whole tokens and single bytes."""
    merger = Merger(Tokenizer(*trained).token_to_id, trained[1])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(merging, "MERGE_MANY_MIN", 1)
        for typecode in ("H", "I"):
            expected = [array(typecode, merger.merge(w)).tobytes() for w in words]
            assert merger.merge_many(words, typecode) == expected


def test_merge_many_names_a_missing_byte(monkeypatch):
    monkeypatch.setattr(merging, "MERGE_MANY_MIN", 1)
    merger = Merger({bytes([i]): i for i in range(255)}, [])
    with pytest.raises(ValueError, match=r"byte b'\\xff'"):
        merger.merge_many([b"fine", b"ok\xffok"], "H")


def test_cold_encoding_in_batches_matches_tiktoken(trained, enc, monkeypatch):
    """A fresh tokenizer merges the pre-tokens it lacks after each batch, together or one by
    one: the ids are tiktoken's for batches of any size."""
    text = EOT.join([make_corpus(3000, seed=5), *TEXTS])
    expected = enc.encode(text, allowed_special="all")
    for batch, many_from in [(1, 1), (100, 1), (10**9, 1), (10**9, 10**9)]:
        monkeypatch.setattr(tokenizer_module, "BATCH_PRETOKENS", batch)
        monkeypatch.setattr(merging, "MERGE_MANY_MIN", many_from)
        assert Tokenizer(*trained, special_tokens=[EOT]).encode(text) == expected


def doubling_tokenizer() -> Tokenizer:
    """A vocab where a run of `a` merges into tokens of 2, 4, ..., 64 `a`s: a run of n bytes takes
    about n merges."""
    merges = [(b"a" * 2**k, b"a" * 2**k) for k in range(6)]
    vocab = {i: bytes([i]) for i in range(256)} | {256 + k: b"a" * 2 ** (k + 1) for k in range(6)}
    return Tokenizer(vocab, merges)


def test_long_runs_cost_grows_linearly():
    """A run 10x longer costs about 10x the CPU time (a merge loop that scans the whole
    pre-token for each merge would cost 100x), and gives tiktoken's ids."""
    tok = doubling_tokenizer()
    assert tok.encode("a" * 200 + "ab") == tiktoken_for(tok).encode("a" * 200 + "ab")

    def cpu_seconds(n: int) -> float:
        best = float("inf")
        for _ in range(3):
            fresh = Tokenizer(tok.vocab, tok.merges)  # nothing cached
            start = time.process_time()
            fresh.encode(" " + "a" * n)
            best = min(best, time.process_time() - start)
        return best

    growth = cpu_seconds(50_000) / cpu_seconds(5_000)
    assert growth < 30, f"10x the run took {growth:.0f}x the time"


def test_cache_reset_keeps_ids(trained, enc, monkeypatch):
    """The cache is reset whenever it grows past its bound: ids stay tiktoken's."""
    monkeypatch.setattr(tokenizer_module, "CACHE_MAX_ENTRIES", 50)
    text = EOT.join([make_corpus(3000, seed=5), *TEXTS])
    assert Tokenizer(*trained, special_tokens=[EOT]).encode(text) == enc.encode(
        text, allowed_special="all"
    )


SURROGATES = ["\ud800", "\udbff", "\udc00", "\udcff", "\udfff", "\ud83d\ude00", "\ud83d"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(SURROGATES + _WORDS + [" ", "\n", "  ", EOT, "é", "🙂"])).map("".join),
    st.data(),
)
def test_lone_surrogates_match_tiktoken(tok, enc, text, data):
    """Text with surrogates is read through UTF-16 with replacement, as tiktoken reads it: a pair
    is its character, a lone surrogate U+FFFD. Streamed in pieces, it encodes the same."""
    ids = tok.encode(text)
    assert ids == enc.encode(text, allowed_special="all")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=5)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokenizer_module, "STREAM_BATCH_CHARS", 1)
        assert list(tok.encode_iterable(chunks)) == ids


def test_encoding_after_an_error_and_from_threads(trained, enc):
    """An encode that failed halfway leaves nothing behind, and threads may share a tokenizer."""
    text = make_corpus(300, seed=8)
    assert "Q" not in text
    failing = Tokenizer({i: bytes([i]) for i in range(256) if i != ord("Q")}, [])
    with pytest.raises(ValueError, match="byte b'Q'.* not in the vocab"):
        failing.encode(text + " Quit")
    assert failing.encode(text) == list(text.encode())
    tok = Tokenizer(*trained, special_tokens=[EOT])
    texts = [make_corpus(2000, seed=s) for s in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often, within one another's encode
    try:
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(tok.encode, texts)) == [enc.encode(t) for t in texts]
    finally:
        sys.setswitchinterval(interval)


def test_long_mixed_text_matches_tiktoken(tok, enc):
    """Long text is pre-tokenized in stretches, ASCII ones by a faster pattern: every cut is exact."""
    text = make_corpus(4000, seed=2) + "\n\n  \t " + "".join(TEXTS) + "end  "
    assert tok.encode(text) == enc.encode(text)
    ascii_text = text.encode("ascii", "ignore").decode()
    assert tok.encode(ascii_text) == enc.encode(ascii_text)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(),
            st.text(st.characters(max_codepoint=127)),
            st.sampled_from(
                _WORDS + [" ", "  ", "\n", "\t", "\udc80", "x\u00a0y", "\u00a0", " \u3000 ", "é "]
            ),
        )
    ).map("".join)
)
def test_pretokenize_blocks_equal_gpt2_findall(text):
    """Stretches cut around non-ASCII characters (lone surrogates and Unicode spaces too), and
    ASCII stretches cut into blocks, concatenate to the plain findall."""
    expected = PRETOKEN_RE.findall(text)
    assert [t for block in pretokenize_blocks(text) for t in block] == expected
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pretokenize_module, "BLOCK_CHARS", 3)
        assert [t for block in pretokenize_blocks(text) for t in block] == expected


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(max_codepoint=127)))
def test_ascii_pretoken_pattern_matches_gpt2_pattern(text):
    assert ASCII_PRETOKEN_RE.findall(text) == PRETOKEN_RE.findall(text)


def test_ascii_pretoken_pattern_matches_gpt2_pattern_on_all_ascii_pairs():
    chars = [chr(c) for c in range(128)]
    text = "".join(f"{a}{b} {a}x{b}\n{b}{a}'s " for a in chars for b in chars)
    assert ASCII_PRETOKEN_RE.findall(text) == PRETOKEN_RE.findall(text)


def test_gpt2_style_vocab_matches_tiktoken_gpt2_rules():
    """A vocab whose ids are not its ranks order (specials first, as the trainer makes them)."""
    vocab, merges = naive_train(make_corpus(500, seed=1), 100)
    shifted = {0: EOT.encode(), **{i + 1: b for i, b in vocab.items()}}
    tok = Tokenizer(shifted, merges, [EOT])
    assert tok.special_to_id[EOT] == 0
    text = EOT.join(TEXTS)
    assert tok.encode(text) == tiktoken_for(tok).encode(text, allowed_special="all")


# --- special tokens ----------------------------------------------------------------------------


def test_overlapping_special_tokens(trained):
    double = EOT + EOT
    tok = Tokenizer(*trained, special_tokens=[EOT, double])
    ids = tok.encode(f"a{EOT}{EOT}b{EOT}c{EOT}{EOT}{EOT}")
    d, e = tok.special_to_id[double], tok.special_to_id[EOT]
    assert [i for i in ids if i in (d, e)] == [d, e, d, e]
    assert tok.decode(ids) == f"a{EOT}{EOT}b{EOT}c{EOT}{EOT}{EOT}"


def test_special_tokens_not_in_vocab_are_appended(trained):
    vocab, merges = trained
    tok = Tokenizer(vocab, merges, special_tokens=["<|a|>", "<|b|>", "<|a|>", "the"])
    assert tok.special_to_id["<|a|>"] == len(vocab)
    assert tok.special_to_id["<|b|>"] == len(vocab) + 1
    assert tok.vocab[len(vocab) + 1] == b"<|b|>"
    # a special that already is a token keeps its id and is matched whole
    the_id = next(i for i, b in vocab.items() if b == b"the")
    assert tok.special_to_id["the"] == the_id
    assert tok.encode("<|b|>other")[0] == len(vocab) + 1
    assert len(vocab) == 256 + len(merges)  # the caller's dict is not modified


def test_special_tokens_are_plain_text_without_specials(trained, enc):
    tok = Tokenizer(*trained)
    text = f"x{EOT}y"
    assert tok.encode(text) == enc.encode_ordinary(text)


# --- decode ------------------------------------------------------------------------------------


def test_decode_unknown_id_raises_naming_it(tok):
    bad = len(tok.vocab) + 123
    with pytest.raises(ValueError, match=str(bad)):
        tok.decode([1, 2, bad])
    with pytest.raises(ValueError, match="-1"):
        tok.decode([-1])


def test_decode_malformed_utf8_becomes_replacement_char(tok):
    euro = tok.encode("€")  # 3 UTF-8 bytes
    bytes_ids = [tok.token_to_id[bytes([b])] for b in "€".encode()]
    assert tok.decode(bytes_ids[:2]) == "\ufffd"
    assert tok.decode([tok.token_to_id[b"\xff"], *euro]) == "\ufffd€"


# --- streaming ---------------------------------------------------------------------------------


@pytest.fixture
def small_stream_batches(monkeypatch):
    """Try to cut after every input string, so that every cut decision is exercised."""
    monkeypatch.setattr(tokenizer_module, "STREAM_BATCH_CHARS", 1)


def test_encode_iterable_matches_encode_on_lines(tok, small_stream_batches):
    text = EOT.join(TEXTS) + "\n\n  \n" + make_corpus(300)
    lines = text.splitlines(keepends=True)
    assert list(tok.encode_iterable(lines)) == tok.encode(text)


@pytest.fixture(scope="module")
def tok_nested_specials(trained) -> Tokenizer:
    return Tokenizer(*trained, special_tokens=[EOT, EOT + EOT, "<|"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                " ",
                "  ",
                "\n",
                "\t",
                "a",
                "ab",
                "é",
                "🙂",
                "1",
                "!",
                "'s",
                EOT,
                "<|",
                "endoftext",
                "|>",
            ]
        )
    ),
    st.data(),
)
def test_encode_iterable_matches_encode_on_any_split(tok_nested_specials, pieces, data):
    """Whitespace runs and special tokens split across input strings, in every way."""
    tok = tok_nested_specials
    text = "".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokenizer_module, "STREAM_BATCH_CHARS", 1)
        assert list(tok.encode_iterable(chunks)) == tok.encode(text)


def test_encode_iterable_long_text_without_safe_cut(tok, small_stream_batches):
    text = "x" * 5000 + "    " * 500 + "y"
    assert list(tok.encode_iterable(iter(text))) == tok.encode(text)


def test_encode_iterable_memory_is_bounded(tok):
    """7 MB of text streamed lazily: the peak of Python allocations stays far below it (it is
    ~3 MB, mostly one 64K-character batch's text, pre-tokens and ids, whatever the stream's
    length)."""
    rng = random.Random(0)
    line_list = [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 15))) + "\n" for _ in range(1000)
    ]
    num_lines = 7_000_000 // (sum(map(len, line_list)) // len(line_list))

    def lines():
        for i in range(num_lines):
            yield line_list[i % len(line_list)] if i % 1000 else EOT + "\n"

    tracemalloc.start()
    try:
        count = sum(1 for _ in tok.encode_iterable(lines()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count > 1_800_000
    assert peak < 4_000_000, f"encode_iterable peaked at {peak / 1e6:.1f} MB"


# --- files ---------------------------------------------------------------------------------------


def test_save_and_from_files_roundtrip(tok, tmp_path):
    tok.save(tmp_path / "vocab.json", tmp_path / "merges.txt")
    loaded = Tokenizer.from_files(
        tmp_path / "vocab.json", tmp_path / "merges.txt", special_tokens=[EOT]
    )
    assert loaded.vocab == tok.vocab and loaded.merges == tok.merges
    text = EOT.join(TEXTS)
    assert loaded.encode(text) == tok.encode(text)


def test_files_use_gpt2_byte_to_unicode_strings(tmp_path):
    # GPT-2 shows a space as "Ġ", a newline as "Ċ", byte 0 as "Ā", 0xFF as "ÿ" and 0xAD as "Ń"
    vocab = {i: bytes([i]) for i in range(256)} | {256: b" t", 257: b"\n\n", 258: b" t\xad\xff"}
    merges = [(b" ", b"t"), (b"\n", b"\n"), (b" t", b"\xad"), (b" t\xad", b"\xff")]
    vocab[259] = b" t\xad"
    Tokenizer(vocab, merges).save(tmp_path / "v.json", tmp_path / "m.txt")
    stored = json.loads((tmp_path / "v.json").read_text(encoding="utf-8"))
    assert stored["Ġt"] == 256 and stored["ĊĊ"] == 257 and stored["ĠtŃÿ"] == 258
    assert stored["Ā"] == 0 and stored["ÿ"] == 255
    assert (tmp_path / "m.txt").read_text(encoding="utf-8").splitlines()[1:] == [
        "Ġ t",
        "Ċ Ċ",
        "Ġt Ń",
        "ĠtŃ ÿ",
    ]


def test_gpt2_format_files_load_as_they_are(tmp_path):
    """A hand-written GPT-2-style pair of files (with the `#version` header) loads."""
    vocab = {chr(c): c for c in range(33, 127)}
    vocab |= {"Ġ": 127, "Ġh": 128, "he": 129, "Ġhe": 130, "<|endoftext|>": 131}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ h\nh e\nĠh e\n", encoding="utf-8")
    tok = Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt", [EOT])
    assert tok.vocab[127] == b" " and tok.vocab[130] == b" he"
    assert tok.merges == [(b" ", b"h"), (b"h", b"e"), (b" h", b"e")]
    assert tok.encode("he he<|endoftext|>") == [129, 130, 131]


@pytest.mark.parametrize(
    "vocab_text, merges_text, message",
    [
        ("not json", "", "not valid JSON"),
        ('{"a": 0}', "a b c\n", "expected 'left right'"),
        ('{"a": 0, "\\u4e2d": 1}', "", "byte-to-unicode"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, vocab_text, merges_text, message):
    (tmp_path / "v.json").write_text(vocab_text, encoding="utf-8")
    (tmp_path / "m.txt").write_text(merges_text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_files(tmp_path / "v.json", tmp_path / "m.txt")


def test_missing_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab file not found"):
        Tokenizer.from_files(tmp_path / "nope.json", tmp_path / "nope.txt")


def test_save_dir_and_from_dir_roundtrip(tok, tmp_path):
    tok.save_dir(tmp_path / "new" / "folder")
    assert sorted(p.name for p in (tmp_path / "new" / "folder").iterdir()) == [
        "merges.txt",
        "vocab.json",
    ]
    loaded = Tokenizer.from_dir(tmp_path / "new" / "folder", [EOT])
    assert loaded.vocab == tok.vocab and loaded.merges == tok.merges
    text = EOT.join(TEXTS)
    assert loaded.encode(text) == tok.encode(text)


def test_from_dir_without_a_tokenizer_points_to_training(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vocab.json and merges.txt.*train_bpe_tokenizer"):
        Tokenizer.from_dir(tmp_path / "none")
    tok.save_dir(tmp_path / "half")
    (tmp_path / "half" / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"merges.txt not found.*train_bpe_tokenizer"):
        Tokenizer.from_dir(tmp_path / "half")


def test_save_writes_neither_file_when_one_cannot_be_written(trained, tmp_path):
    """A vocab that GPT-2's format cannot hold (two ids, one token) leaves no file behind."""
    vocab, merges = trained
    with pytest.raises(ValueError, match="both hold the bytes"):
        Tokenizer({**vocab, len(vocab): vocab[0]}, merges).save_dir(tmp_path / "tk")
    assert list((tmp_path / "tk").iterdir()) == []


def test_to_tiktoken_gives_our_ids(trained, tok):
    """The tiktoken Encoding gives our ids on special tokens, non-ASCII text, emoji and
    whitespace runs, with the trainer's id layout (specials first) too."""
    text = EOT.join(TEXTS) + EOT + " \n\n\t  " + EOT + EOT + "🙂" * 50 + " " * 30 + "x"
    assert tok.to_tiktoken().encode(text, allowed_special="all") == tok.encode(text)
    vocab, merges = trained
    specials_first = {0: EOT.encode(), **{i + 1: b for i, b in vocab.items()}}
    tok = Tokenizer(specials_first, merges, [EOT])
    assert tok.to_tiktoken().encode(text, allowed_special="all") == tok.encode(text)


def test_to_tiktoken_without_tiktoken_says_what_to_install(tok, monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # as if not installed
    with pytest.raises(ImportError, match="needs the tiktoken package"):
        tok.to_tiktoken()


def test_merge_of_unknown_token_raises():
    with pytest.raises(ValueError, match="not in the vocab"):
        Tokenizer({i: bytes([i]) for i in range(256)}, [(b"a", b"b")])


# --- binarization -----------------------------------------------------------------------------


def test_binarize_matches_encode(tok, tmp_path):
    """Ranges encoded by two processes, in order; bytes that are not UTF-8 read as U+FFFD."""
    raw = (EOT.join([make_corpus(2000, seed=3), *TEXTS]) + "\n").encode() + b"bad \xff\xfe bytes\n"
    (tmp_path / "in.txt").write_bytes(raw)
    stats = encode_file(tok, tmp_path / "in.txt", tmp_path / "out" / "ids.npy", 2, chunk_size=500)
    ids = np.load(tmp_path / "out" / "ids.npy", mmap_mode="r")
    expected = tok.encode(raw.decode("utf-8", "replace"))
    assert ids.dtype == np.uint16 and stats.dtype == "uint16"
    assert ids.tolist() == expected
    assert stats.num_tokens == len(expected) and stats.input_bytes == len(raw)
    assert tok.decode(ids.tolist()).endswith("bad \ufffd\ufffd bytes\n")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ids.npy"]  # no temp file left


def test_binarize_error_in_worker_leaves_no_output(tmp_path):
    tok = Tokenizer({i: bytes([i]) for i in range(256) if i != ord("Q")}, [])
    (tmp_path / "in.txt").write_bytes(b"fine text\n" * 500 + b"bad Q\n" + b"more text\n" * 500)
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="byte b'Q'.* not in the vocab"):
        encode_file(tok, tmp_path / "in.txt", tmp_path / "out" / "ids.npy", 2, chunk_size=300)
    assert list((tmp_path / "out").iterdir()) == []


def test_binarize_uses_uint32_for_large_vocab(tmp_path):
    vocab = {i: bytes([i]) for i in range(256)} | {i: b"<%d>" % i for i in range(256, 70_000)}
    tok = Tokenizer(vocab, [], special_tokens=["<|big|>"])
    text = "small ids <|big|> then more\n" * 50
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    encode_file(tok, tmp_path / "in.txt", tmp_path / "ids.npy", 2, chunk_size=100)
    ids = np.load(tmp_path / "ids.npy")
    assert ids.dtype == np.uint32 and ids.tolist() == tok.encode(text) and ids.max() == 70_000


def test_binarize_empty_file_is_an_error_naming_it(tok, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"in\.txt is empty"):
        encode_file(tok, tmp_path / "in.txt", tmp_path / "ids.npy")
    assert not (tmp_path / "ids.npy").exists()


def test_binarize_tiktoken_backend_gives_our_ids(tok, tmp_path):
    text = EOT.join([make_corpus(2000, seed=6), *TEXTS])
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    encode_file(
        tok, tmp_path / "in.txt", tmp_path / "ids.npy", 2, chunk_size=700, backend="tiktoken"
    )
    assert np.load(tmp_path / "ids.npy").tolist() == tok.encode(text)


def test_binarize_tiktoken_backend_refuses_other_ids(tmp_path):
    """A vocab whose ids do not follow its merge order: tiktoken ranks by id and merges "bc"
    first in "abc", we merge "ab" first. Nothing is written."""
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"bc", 257: b"ab"}
    tok = Tokenizer(vocab, [(b"a", b"b"), (b"b", b"c")])
    assert tok.encode("abc") == [257, ord("c")]
    (tmp_path / "in.txt").write_text("x abc " * 1000, encoding="utf-8")
    with pytest.raises(ValueError, match="tiktoken does not give this tokenizer's ids"):
        encode_file(tok, tmp_path / "in.txt", tmp_path / "ids.npy", backend="tiktoken")
    assert list(tmp_path.iterdir()) == [tmp_path / "in.txt"]
