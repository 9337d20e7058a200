import io
import random

import numpy as np
import pytest
import torch

from cs336_basics.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from cs336_basics.optim import AdamW

from .adapters import run_load_checkpoint, run_save_checkpoint


class _TinyNet(torch.nn.Module):
    def __init__(self, d_in: int = 10, d_hidden: int = 8, d_out: int = 3):
        super().__init__()
        self.fc1 = torch.nn.Linear(d_in, d_hidden)
        self.norm = torch.nn.LayerNorm(d_hidden)
        self.fc2 = torch.nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


class _Compiled(torch.nn.Module):
    """Shaped like torch.compile's wrapper (the module under `_orig_mod`) without the seconds
    that importing the compiler costs."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self._orig_mod = module


def _make(seed: int = 0, **shape) -> tuple[_TinyNet, AdamW]:
    torch.manual_seed(seed)
    model = _TinyNet(**shape)
    return model, AdamW(
        model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
    )


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    """Batch `i` depends only on `i`, so an interrupted run sees the same data as a whole one."""
    for i in steps:
        gen = torch.Generator().manual_seed(i)
        x, y = torch.randn(16, 10, generator=gen), torch.randn(16, 3, generator=gen)
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()


def _assert_same_state(model, optimizer, other_model, other_optimizer):
    for (name, p), (other_name, q) in zip(
        model.state_dict().items(), other_model.state_dict().items(), strict=True
    ):
        assert name == other_name and torch.equal(p, q)
    state, other = optimizer.state_dict(), other_optimizer.state_dict()
    assert state["param_groups"] == other["param_groups"]
    assert state["state"].keys() == other["state"].keys()
    for i, moments in state["state"].items():
        assert moments["step"] == other["state"][i]["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(moments[key], other["state"][i][key])


def test_checkpointing(tmp_path):
    model, optimizer = _make()
    _train(model, optimizer, range(5))
    uninterrupted, uninterrupted_opt = _make()
    _train(uninterrupted, uninterrupted_opt, range(5))

    path = tmp_path / "checkpoint.pt"
    run_save_checkpoint(model, optimizer, iteration=5, out=path)
    buffer = io.BytesIO()
    run_save_checkpoint(model, optimizer, iteration=5, out=buffer)
    buffer.seek(0)

    for src in (path, str(path), buffer):
        restored, restored_opt = _make(seed=123)  # different initial weights, empty moments
        assert run_load_checkpoint(src, restored, restored_opt) == 5
        _assert_same_state(model, optimizer, restored, restored_opt)

    # Training on from the checkpoint reproduces the uninterrupted run bit for bit.
    _train(uninterrupted, uninterrupted_opt, range(5, 12))
    _train(restored, restored_opt, range(5, 12))
    _assert_same_state(uninterrupted, uninterrupted_opt, restored, restored_opt)


def test_checkpoint_extra_state_round_trip():
    model, _ = _make()
    np_rng, py_rng = np.random.default_rng(5), random.Random(5)
    extra = {
        "config": {
            "model": {"d_model": 8, "norm": "pre"},
            "lr": 1e-3,
            "tags": ["a", "b"],
            "note": None,
        },
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np_rng.bit_generator.state,
        "python_rng": py_rng.getstate(),
        "dtype": torch.bfloat16,
    }
    buffer = io.BytesIO()
    save_checkpoint(model, None, 7, buffer, extra=extra)
    expected_np, expected_py = np_rng.random(4), py_rng.random()
    buffer.seek(0)
    saved = read_checkpoint(buffer)
    assert saved["iteration"] == 7 and saved["optimizer"] is None
    assert saved["extra"]["config"] == extra["config"] and saved["extra"]["dtype"] == torch.bfloat16
    assert torch.equal(saved["extra"]["torch_rng"], extra["torch_rng"])
    np_rng.bit_generator.state = saved["extra"]["numpy_rng"]
    py_rng.setstate(saved["extra"]["python_rng"])
    assert np.array_equal(np_rng.random(4), expected_np) and py_rng.random() == expected_py

    # The dict from read_checkpoint loads like the file; asking for optimizer state it lacks fails.
    other, other_opt = _make(seed=1)
    assert load_checkpoint(saved, other) == 7
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(saved, other, other_opt)


def test_checkpoint_rejects_extra_that_would_not_load(tmp_path):
    model, optimizer = _make()
    with pytest.raises(TypeError, match=r"extra\['rng'\]\[1\].*numpy.ndarray"):
        save_checkpoint(
            model, optimizer, 1, tmp_path / "c.pt", extra={"rng": ("MT19937", np.zeros(3))}
        )
    assert not (tmp_path / "c.pt").exists()


def test_checkpoint_shape_mismatch_names_the_keys():
    model, optimizer = _make(d_hidden=8)
    buffer = io.BytesIO()
    save_checkpoint(model, optimizer, 3, buffer)
    buffer.seek(0)
    bigger, bigger_opt = _make(d_hidden=16)
    with pytest.raises(ValueError) as info:
        load_checkpoint(buffer, bigger, bigger_opt)
    message = str(info.value)
    for line in (
        "fc1.weight: checkpoint (8, 10), model (16, 10)",
        "norm.bias: checkpoint (8,), model (16,)",
        "fc2.weight: checkpoint (3, 8), model (3, 16)",
    ):
        assert line in message

    buffer.seek(0)
    renamed = torch.nn.Module()
    renamed.body = _TinyNet()
    with pytest.raises(
        ValueError,
        match=r"(?s)missing from checkpoint:.*body\.fc1\.weight"
        r".*unexpected in checkpoint:.*\n    fc1\.weight",
    ):
        load_checkpoint(buffer, renamed)


def test_checkpoint_compiled_and_plain_models_interchange():
    model, optimizer = _make()
    _train(model, optimizer, range(2))
    compiled = _Compiled(model)
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    buffer = io.BytesIO()
    save_checkpoint(compiled, optimizer, 2, buffer)
    buffer.seek(0)
    assert not any(k.startswith("_orig_mod.") for k in read_checkpoint(buffer)["model"])

    plain, _ = _make(seed=9)
    buffer.seek(0)
    load_checkpoint(buffer, plain)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))

    # A file written elsewhere with the prefixed keys loads into a plain or a compiled model.
    prefixed = io.BytesIO()
    torch.save(
        {"model": compiled.state_dict(), "optimizer": None, "iteration": 2, "extra": {}}, prefixed
    )
    for target in (_make(seed=10)[0], _Compiled(_make(seed=11)[0])):
        prefixed.seek(0)
        load_checkpoint(prefixed, target)
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), target.parameters()))


def test_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = _make()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(model, optimizer, 1, path)
    before = path.read_bytes()

    def crash_midway(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    _train(model, optimizer, range(1))
    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, optimizer, 2, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]

    # An output folder that cannot exist (its parent is a file) gives a clear OSError.
    with pytest.raises(OSError, match="cannot write"):
        save_checkpoint(model, optimizer, 2, path / "sub" / "checkpoint.pt")


def test_bad_checkpoint_files(tmp_path):
    model, _ = _make()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt", model)
    good = tmp_path / "good.pt"
    save_checkpoint(model, None, 1, good)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_checkpoint(tmp_path / "truncated.pt", model)
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        read_checkpoint(tmp_path / "tensor.pt")
