"""script/train.py as a user meets it, each case a subprocess of the real script on tiny data:
named data is used or the run stops, nothing is lost before every check has passed, one signal
gives one checkpoint and one line, and every error names its cause."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cs336_basics.checkpoint import read_checkpoint
from cs336_basics.tokenizer.tokenizer import Tokenizer
from cs336_basics.training.prepare import tokenizer_size
from cs336_basics.training.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "script" / "train.py")
SMALL = [
    "--model.context_length=16", "--model.d_model=16", "--model.num_layers=1",
    "--model.num_heads=2", "--model.d_ff=32", "--training.batch_size=4",
    "--training.max_steps=4", "--training.eval_batches=2", "--training.device=cpu",
    "--training.threads=1", "--samples=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Token files and the tokenizer that made them (the text supports fewer than 300 ids)."""
    d = tmp_path_factory.mktemp("data")
    text = "the cat sat on the mat. the dog ate the hat.\n<|endoftext|>\n" * 200
    (d / "train.txt").write_text(text)
    from cs336_basics import train_bpe

    vocab, merges = train_bpe(d / "train.txt", 300, ["<|endoftext|>"])
    tokenizer = Tokenizer(vocab, merges, ["<|endoftext|>"])
    tokenizer.save_dir(d / "tok")
    ids = np.array(tokenizer.encode(text), dtype=np.uint16)
    np.save(d / "train.npy", ids)
    np.save(d / "valid.npy", ids[:500])
    return d


def _own(data: Path) -> list[str]:
    return [f"--data.train_tokens={data / 'train.npy'}", f"--data.val_tokens={data / 'valid.npy'}",
            f"--data.tokenizer_dir={data / 'tok'}"]  # fmt: skip


def _train(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_a_mistyped_token_file_stops_the_run(data, tmp_path):
    args = [*_own(data), f"--data.train_tokens={data / 'trian.npy'}", *SMALL]
    err = _error(_train(tmp_path, *args))
    assert "trian.npy not found" in err and "data.train_text" in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()  # no demo


def test_own_data_takes_only_the_demo_model_and_its_tokenizer_size(data, tmp_path):
    result = _train(tmp_path, *_own(data), *SMALL)
    assert result.returncode == 0, result.stderr
    assert "its model, optimizer and step counts only" in result.stdout
    assert "generated" not in result.stdout and str(data / "train.npy") in result.stdout
    run = RunFolder(tmp_path / "runs" / "run")  # not the demo's run name
    config, size = run.config.read_text(), tokenizer_size(data / "tok")
    assert f"vocab_size = {size}" in config and "overwrite = false" in config
    assert "time_budget_s" not in config  # the demo's budget is not taken
    # The same name again: refused, with both ways out; nothing is touched.
    err = _error(_train(tmp_path, *_own(data), *SMALL))
    assert "--resume" in err and "--training.overwrite true" in err
    # A vocab_size that does not fit the tokenizer: refused before any work.
    err = _error(_train(tmp_path, *_own(data), *SMALL, "--model.vocab_size=512",
                        "--training.run_name=other"))  # fmt: skip
    assert f"has {size} ids" in err and f"--model.vocab_size {size}" in err
    assert not (tmp_path / "runs" / "other").exists()


def test_a_failing_run_leaves_the_earlier_run_as_it_was(data, tmp_path):
    assert _train(tmp_path, *_own(data), *SMALL).returncode == 0
    run = RunFolder(tmp_path / "runs" / "run")
    before = {p: p.read_bytes() for p in [*run.checkpoints(), run.metrics]}
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full(100, 5000, dtype=np.uint16))
    err = _error(_train(tmp_path, *_own(data), *SMALL, f"--data.val_tokens={bad}",
                        "--training.overwrite=true"))  # fmt: skip
    assert "5000" in err and "bad.npy" in err
    assert {p: p.read_bytes() for p in [*run.checkpoints(), run.metrics]} == before


def test_messages_name_the_problem(data, tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text("[model]\nd_modle = 64\n")
    assert "mine.toml" in _error(_train(tmp_path, "--config", str(preset)))
    (tmp_path / "file").write_text("x")
    err = _error(
        _train(tmp_path, *_own(data), *SMALL, f"--training.out_dir={tmp_path / 'file' / 'runs'}")
    )
    assert "not a directory" in err
    text = tmp_path / "story.bin"
    text.write_text("Once upon a time there was a story.\n" * 50)
    err = _error(_train(tmp_path, *_own(data), *SMALL, f"--data.train_tokens={text}"))
    assert "holds text, not token ids" in err and "tokenize_and_bin.py" in err
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros(0, dtype=np.uint16))
    err = _error(_train(tmp_path, *_own(data), *SMALL, f"--data.val_tokens={empty}"))
    assert "empty.npy holds no tokens" in err


def test_time_budget_says_how_far_it_reaches_and_ends_decayed(data, tmp_path):
    result = _train(tmp_path, *_own(data), *SMALL, "--training.max_steps=100000",
                    "--training.time_budget_s=2", "--training.log_interval=20")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "the run reaches about step" in result.stdout + result.stderr
    rows = [
        json.loads(r) for r in RunFolder(tmp_path / "runs" / "run").metrics.read_text().splitlines()
    ]
    trained = [r for r in rows if r["lr"] is not None]
    assert trained[-1]["step"] < 100_000
    assert trained[-1]["lr"] < 0.2 * max(r["lr"] for r in trained)
    assert "full_val_loss" in rows[-1]  # then the whole validation set, as its own row


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_saves_one_checkpoint(data, tmp_path, signum):
    """As a job runner, `kill -- -PGID` or a cluster's preemption deliver it, with no terminal:
    to every process of the group, and (through `uv run`) a second time to Python."""
    args = [*_own(data), *SMALL, "--training.max_steps=100000", "--training.log_interval=1",
            "--training.checkpoint_interval=100000"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, TRAIN, *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    run = RunFolder(tmp_path / "runs" / "run")
    deadline = time.monotonic() + 120
    while not (run.metrics.exists() and len(run.metrics.read_text().splitlines()) > 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signum)
    os.killpg(proc.pid, signum)  # the forwarded copy
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert "Traceback" not in err and err.count("stopped by") == 1
    (saved,) = run.checkpoints()
    step = read_checkpoint(saved)["iteration"]
    assert f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved" in err
