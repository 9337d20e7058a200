import math
from collections import Counter

import numpy as np
import pytest
import torch

from cs336_basics.data import check_token_range, get_batch, load_tokens, validation_batches

from .adapters import run_get_batch


def test_get_batch():
    dataset = np.arange(0, 100)
    batch_size, context_length = 32, 7
    starts = Counter()
    num_iters = 1000
    for _ in range(num_iters):
        x, y = run_get_batch(dataset, batch_size, context_length, "cpu")
        assert x.shape == y.shape == (batch_size, context_length)
        assert x.dtype == y.dtype == torch.long
        assert torch.equal(x + 1, y)
        assert torch.equal(
            x - x[:, :1], torch.arange(context_length).expand_as(x)
        )  # contiguous runs
        starts.update(x[:, 0].tolist())

    # Every valid start 0 .. len - context_length - 1 occurs, nothing beyond, roughly uniformly.
    num_starts = len(dataset) - context_length
    assert set(starts) == set(range(num_starts))
    expected = num_iters * batch_size / num_starts
    std = math.sqrt(num_iters * batch_size * (1 / num_starts) * (1 - 1 / num_starts))
    assert all(abs(count - expected) < 5 * std for count in starts.values())

    # An unusable device surfaces as torch's own error, whatever this machine has.
    with pytest.raises((RuntimeError, AssertionError)):
        run_get_batch(dataset, batch_size, context_length, "cuda:99")


def test_get_batch_reads_a_memmap_and_is_reproducible(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(5000, dtype=np.uint16).tofile(path)
    tokens = load_tokens(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    for make_generator in (
        lambda: np.random.default_rng(7),
        lambda: torch.Generator().manual_seed(7),
    ):
        x1, y1 = get_batch(tokens, 4, 16, "cpu", generator=make_generator())
        x2, y2 = get_batch(tokens, 4, 16, "cpu", generator=make_generator())
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1 + 1, y1)
    torch.manual_seed(3)
    a = get_batch(tokens, 4, 16, "cpu")[0]
    torch.manual_seed(3)
    assert torch.equal(a, get_batch(tokens, 4, 16, "cpu")[0])


def test_get_batch_rejects_too_short_data():
    get_batch(np.arange(8), 2, 7, "cpu")  # exactly context_length + 1 tokens: one valid start
    with pytest.raises(ValueError, match="context_length"):
        get_batch(np.arange(7), 2, 7, "cpu")
    with pytest.raises(ValueError, match="1-D"):
        get_batch(np.zeros((10, 10), dtype=np.int64), 2, 3, "cpu")


def test_load_tokens(tmp_path):
    npy = tmp_path / "tokens.npy"
    np.save(npy, np.arange(10, dtype=np.uint32))
    tokens = load_tokens(npy)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint32
    assert tokens.tolist() == list(range(10))
    with pytest.raises(ValueError, match="uint16"):
        load_tokens(npy, dtype=np.uint16)

    raw = tmp_path / "tokens.bin"
    np.arange(6, dtype=np.uint32).tofile(raw)
    assert load_tokens(raw, dtype=np.uint32).tolist() == list(range(6))
    assert len(load_tokens(raw)) == 12  # read as the default uint16
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="3 bytes"):
        load_tokens(tmp_path / "odd.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="0 bytes"):
        load_tokens(tmp_path / "empty.bin")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_tokens(tmp_path / "missing.npy")
    np.save(tmp_path / "floats.npy", np.zeros(3))
    with pytest.raises(ValueError, match="integers"):
        load_tokens(tmp_path / "floats.npy")


def test_check_token_range(tmp_path):
    path = tmp_path / "tokens.npy"
    data = np.arange(1000, dtype=np.uint16)
    np.save(path, data)
    tokens = load_tokens(path)
    check_token_range(tokens, vocab_size=1000, chunk_size=64)
    # The offending id sits in a late chunk; the message names the file, the id and the vocab.
    with pytest.raises(ValueError, match=r"tokens\.npy.*999.*999 ids"):
        check_token_range(tokens, vocab_size=999, chunk_size=64)
    with pytest.raises(ValueError, match="-5"):
        check_token_range(np.array([3, -5, 2]), vocab_size=10)


def test_validation_batches():
    dataset = np.arange(1001)
    batches = list(validation_batches(dataset, 4, 10, num_batches=3, seed=0))
    again = list(validation_batches(dataset, 4, 10, num_batches=3, seed=0))
    assert len(batches) == 3
    for (x, y), (x2, y2) in zip(batches, again, strict=True):
        assert x.shape == y.shape == (4, 10) and torch.equal(x + 1, y)
        assert torch.equal(x, x2) and torch.equal(y, y2)
    starts = torch.cat([x[:, 0] for x, _ in batches])
    assert starts.unique().numel() == 12 and bool(
        (starts % 10 == 0).all()
    )  # non-overlapping windows
    other_seed = torch.cat(
        [x[:, 0] for x, _ in validation_batches(dataset, 4, 10, num_batches=3, seed=1)]
    )
    assert not torch.equal(starts, other_seed)

    # All windows, once each, when no count is given (or more than the data holds).
    every = list(validation_batches(dataset, 4, 10, num_batches=None))
    assert [len(x) for x, _ in every] == [4] * 25
    assert torch.equal(torch.cat([x for x, _ in every]).flatten(), torch.arange(1000))
    assert len(list(validation_batches(np.arange(35), 2, 10, num_batches=50))) == 2
