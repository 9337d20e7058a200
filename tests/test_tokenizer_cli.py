"""The tokenizer scripts as a user runs them: the --help examples, errors and interrupts, each a
subprocess on tiny generated data."""

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from cs336_basics.tokenizer.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parent.parent
EOT = "<|endoftext|>"


def script(name: str) -> list[str]:
    return [sys.executable, str(REPO / "script" / f"{name}.py")]


def help_examples(name: str) -> list[list[str]]:
    """The `uv run python script/...` commands of a script's --help, as argv lists."""
    text = subprocess.run([*script(name), "--help"], capture_output=True, text=True, check=True)
    commands = re.findall(r"^\s*(uv run python script/(?:.*\\\n)*.*)$", text.stdout, re.M)
    assert commands, f"{name}.py --help shows no example"
    argvs = []
    for command in commands:
        argv = shlex.split(command.replace("\\\n", " "))
        assert argv[:3] == ["uv", "run", "python"]
        argvs.append([sys.executable, str(REPO / argv[3]), *argv[4:]])
    return argvs


def words(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    common = "the a cat sat on mat and ran it was not".split()
    rare = ["".join(rng.choices("etaoinshrdlu", k=rng.randint(2, 8))) for _ in range(300)]
    return " ".join(rng.choice(common if rng.random() < 0.5 else rare) for _ in range(n))


def test_help_examples_run_as_written(tmp_path):
    """Each script's --help example runs, on tiny files at the paths it names: the folder that
    train_bpe_tokenizer.py writes is the one tokenize_and_bin.py and tokenizer_experiments.py read."""
    for name in ("TinyStoriesV2-GPT4-train", "TinyStoriesV2-GPT4-valid", "owt_train", "owt_valid"):
        text = EOT.join(words(300, seed=s) for s in range(20))
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f"{name}.txt").write_text(text, encoding="utf-8")

    def run(argv: list[str]) -> str:
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    [train] = help_examples("train_bpe_tokenizer")
    run(train)
    run([*train[:-4], "--input", "data/owt_train.txt", "--vocab-size", "32000"])  # experiments'
    [encode] = help_examples("tokenize_and_bin")
    out = run(encode)
    assert "bytes/token" in out and "MB/s a worker" in out
    folder = tmp_path / "model" / "TinyStoriesV2-GPT4-train-bpe10000"
    tokenizer = Tokenizer.from_dir(folder, [EOT])
    ids = np.load(tmp_path / "data" / "TinyStoriesV2-GPT4-train.npy")
    text = (tmp_path / "data" / "TinyStoriesV2-GPT4-train.txt").read_text(encoding="utf-8")
    assert ids.tolist() == tokenizer.encode(text)
    run([*encode[:-1], "data/tiktoken.npy", "--backend", "tiktoken"])
    assert np.load(tmp_path / "data" / "tiktoken.npy").tolist() == ids.tolist()
    [experiments] = help_examples("tokenizer_experiments")
    assert "hours for 825 GB" in run(experiments)


def fails_with_one_line(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_tokenize_and_bin_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    missing = fails_with_one_line(
        [*script("tokenize_and_bin"), "--tokenizer-dir", "model/none", "--input", "empty.txt",
         "--output", "ids.npy"], tmp_path,
    )  # fmt: skip
    assert "no tokenizer in model/none" in missing and "script/train_bpe_tokenizer.py" in missing
    Tokenizer({i: bytes([i]) for i in range(256)}, []).save_dir(tmp_path / "tk")
    empty = fails_with_one_line(
        [*script("tokenize_and_bin"), "--tokenizer-dir", "tk", "--input", "empty.txt",
         "--output", "ids.npy"], tmp_path,
    )  # fmt: skip
    assert "empty.txt is empty" in empty
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "tk"]


def test_train_bpe_tokenizer_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    error = fails_with_one_line(
        [*script("train_bpe_tokenizer"), "--input", "empty.txt", "--out", "tk"], tmp_path
    )
    assert "empty.txt has no text to train on" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def interrupt(argv: list[str], cwd: Path, signum: int) -> tuple[int, str]:
    """Start a script in its own process group (no terminal); once it has said it started and
    its worker processes run, send `signum` to the whole group. Its exit status and stderr."""
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        proc.stdout.readline()  # "training ..." / "encoding ...": the work starts
        deadline = time.monotonic() + 30
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.002)
        assert psutil.Process(proc.pid).children(), "no worker process started"
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    with pytest.raises(ProcessLookupError):  # no worker outlived the script
        os.killpg(proc.pid, 0)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tokenize_and_bin_interrupted(tmp_path, signum):
    """One line on stderr, exit 128 + signal, no traceback (workers included), no output."""
    # Runs of `a` that merge into tokens of up to 64: each of these distinct runs takes about a
    # merge a byte, so encoding lasts a few seconds.
    merges = [(b"a" * 2**k, b"a" * 2**k) for k in range(6)]
    vocab = {i: bytes([i]) for i in range(256)} | {256 + k: b"a" * 2 ** (k + 1) for k in range(6)}
    Tokenizer(vocab, merges).save_dir(tmp_path / "tk")
    (tmp_path / "in.txt").write_text(" ".join("a" * n for n in range(1000, 4000)))
    status, err = interrupt(
        [*script("tokenize_and_bin"), "--tokenizer-dir", "tk", "--input", "in.txt",
         "--output", "ids.npy", "--workers", "2"], tmp_path, signum,
    )  # fmt: skip
    name = signal.Signals(signum).name
    assert (status, err) == (128 + signum, f"interrupted ({name}): ids.npy left as it was\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "tk"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_train_bpe_tokenizer_interrupted(tmp_path, signum):
    """Interrupted while its workers count: one line, exit 128 + signal, no tokenizer folder."""
    chunk = words(200_000, seed=1) + "\n"
    with open(tmp_path / "in.txt", "w") as f:
        for _ in range(12):  # ~14 MB: counting lasts a while even on two fast cores
            f.write(chunk)
    status, err = interrupt(
        [*script("train_bpe_tokenizer"), "--input", "in.txt", "--vocab-size", "5000",
         "--out", "tk", "--workers", "2"], tmp_path, signum,
    )  # fmt: skip
    name = signal.Signals(signum).name
    assert (status, err) == (128 + signum, f"interrupted ({name}): nothing written to tk\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
