"""Data-parallel training with torchrun on CPU (gloo), 2 ranks, a tiny model: the same run as
one process at the same global batch, checkpoints that resume at any world size, a signal to
one rank or to the whole group, and a rank that dies."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from cs336_basics.checkpoint import read_checkpoint
from cs336_basics.training import run
from cs336_basics.training.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
TINY = {
    "model.vocab_size": 64,
    "model.context_length": 16,
    "model.d_model": 16,
    "model.num_layers": 1,
    "model.num_heads": 2,
    "model.d_ff": 32,
    "optim.lr": 1e-2,
    "optim.min_lr": 1e-3,
    "schedule.warmup_iters": 2,
    "schedule.cosine_cycle_iters": STEPS,  # pinned: a shorter run resumes into the same schedule
    "training.batch_size": 8,
    "training.grad_accum_steps": 2,
    "training.max_steps": STEPS,
    "training.log_interval": 1,
    "training.eval_interval": 3,
    "training.eval_batches": 3,
    "training.checkpoint_interval": 3,
    "training.keep_last": 10,
    "training.device": "cpu",
    "training.threads": 1,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    # Tokens with structure (a noisy walk), so that the loss moves within a few steps.
    walk = np.cumsum(rng.integers(-2, 3, 30_000)) % 64
    np.save(d / "train.npy", walk[:25_000].astype(np.uint16))
    np.save(d / "valid.npy", walk[25_000:].astype(np.uint16))
    return {"data.train_tokens": str(d / "train.npy"), "data.val_tokens": str(d / "valid.npy")}


def _argv(data: dict, out: Path, name: str, **extra) -> list[str]:
    values = {**TINY, **data, "training.out_dir": str(out), "training.run_name": name, **extra}
    return [f"--{k}={v}" for k, v in values.items()] + ["--samples", "0"]


def _torchrun(argv: list[str], **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.Popen(
        [*cmd, "script/train.py", *argv], cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, **popen,
    )  # fmt: skip


def _two_ranks(argv: list[str]) -> str:
    proc = _torchrun(argv)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return out


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in RunFolder(run_dir).metrics.read_text().splitlines()]


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or abs(a - b) <= 1e-5 * abs(b)


def _same_run(got: Path, want: Path, steps: range) -> None:
    rows, expected = _rows(got), {r["step"]: r for r in _rows(want)}
    assert [r["step"] for r in rows] == list(steps)
    for r in rows:
        e = expected[r["step"]]
        assert r["lr"] == e["lr"], r["step"]
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert _close(r[key], e[key]), (r["step"], key, r[key], e[key])


@pytest.fixture(scope="module")
def whole(data, tmp_path_factory) -> Path:
    """The reference: one process, the whole run."""
    out = tmp_path_factory.mktemp("whole")
    assert run.main(_argv(data, out, "whole")) == 0
    return out / "whole"


def test_two_ranks_equal_one_process_then_resume_on_one(data, whole, tmp_path):
    out = _two_ranks(_argv(data, tmp_path, "dp", **{"training.max_steps": 3}))
    assert out.count("Done in") == 1  # rank 0 alone speaks for the run
    _same_run(tmp_path / "dp", whole, range(4))
    state = read_checkpoint(RunFolder(tmp_path / "dp").checkpoints()[-1])
    assert state["iteration"] == 3 and "module." not in next(iter(state["model"]))
    # The checkpoint of 2 ranks continues in one process, on the same loss curve.
    assert run.main(_argv(data, tmp_path, "dp", **{"training.resume": True})) == 0
    _same_run(tmp_path / "dp", whole, range(STEPS + 1))
    final, reference = (
        read_checkpoint(RunFolder(d).checkpoints()[-1]) for d in (tmp_path / "dp", whole)
    )
    for key, value in reference["model"].items():
        torch.testing.assert_close(final["model"][key], value, rtol=1e-5, atol=1e-6)


def test_one_process_resumes_on_two_ranks(data, whole, tmp_path):
    assert run.main(_argv(data, tmp_path, "grow", **{"training.max_steps": 3})) == 0
    _two_ranks(_argv(data, tmp_path, "grow", **{"training.resume": True}))
    _same_run(tmp_path / "grow", whole, range(STEPS + 1))


def test_fsdp_resumes_a_one_process_run_and_saves_the_whole_state(data, whole, tmp_path):
    """FSDP2 on gloo: the optimizer state of a plain checkpoint is sharded on load, and the
    checkpoints it writes are gathered back into the plain format (and equal the reference)."""
    assert run.main(_argv(data, tmp_path, "fsdp", **{"training.max_steps": 3})) == 0
    _two_ranks(
        _argv(data, tmp_path, "fsdp", **{"training.resume": True, "training.parallel": "fsdp"})
    )
    _same_run(tmp_path / "fsdp", whole, range(STEPS + 1))
    final, reference = (
        read_checkpoint(RunFolder(d).checkpoints()[-1]) for d in (tmp_path / "fsdp", whole)
    )
    for key, value in reference["model"].items():
        torch.testing.assert_close(final["model"][key], value, rtol=1e-5, atol=1e-6)
    moments = [s["exp_avg_sq"] for s in final["optimizer"]["state"].values()]
    expected = [s["exp_avg_sq"] for s in reference["optimizer"]["state"].values()]
    assert len(moments) == len(expected)
    for got, want in zip(moments, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-9)


def _wait_for_rows(run_dir: Path, count: int, proc: subprocess.Popen) -> None:
    metrics = RunFolder(run_dir).metrics
    deadline = time.monotonic() + 180
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= count):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        if child.environ().get("RANK") == str(rank):
            return child.pid
    raise AssertionError(f"no process of rank {rank}")


LONG = {"training.max_steps": 100_000, "training.eval_interval": 100_000,
        "training.checkpoint_interval": 100_000}  # fmt: skip


@pytest.mark.parametrize("to", ["one rank", "the process group"])
def test_sigterm_saves_one_checkpoint_and_every_rank_exits(data, tmp_path, to):
    proc = _torchrun(_argv(data, tmp_path, "sig", **LONG), start_new_session=True)
    _wait_for_rows(tmp_path / "sig", 4, proc)
    if to == "one rank":
        os.kill(_rank_pid(proc, 1), signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    saved = RunFolder(tmp_path / "sig").checkpoints()
    assert len(saved) == 1
    step = read_checkpoint(saved[0])["iteration"]
    assert _rows(tmp_path / "sig")[-1]["step"] == step
    assert err.count("stopped by SIGTERM") == 1 and f"at step {step}; checkpoint saved" in err
    assert "[rank" not in err  # no traceback from a worker; torchrun's own summary may follow
    if to == "one rank":  # torchrun reports the stop as its workers' exit status
        assert "exitcode  : 143" in err


def test_a_rank_that_dies_stops_the_others(data, tmp_path):
    proc = _torchrun(_argv(data, tmp_path, "dies", **LONG), start_new_session=True)
    _wait_for_rows(tmp_path / "dies", 4, proc)
    os.kill(_rank_pid(proc, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # no hang
    assert proc.returncode != 0
    assert "rank 0: another rank stopped answering" in err
