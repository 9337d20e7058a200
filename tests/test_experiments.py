"""Sweeps end to end on a tiny model and generated tokens; every experiment script's --help."""

import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

from cs336_basics.config import load_config, short_run_overrides, with_overrides
from cs336_basics.tokenizer.stats import (
    compression_ratio,
    measure_throughput,
    sample_documents,
    split_documents,
)
from cs336_basics.training import sweep
from cs336_basics.training.sweep import RunOutcome, run_sweep
from cs336_basics.training.trainer import TrainResult

SCRIPTS = [
    "learning_rate_experiment",
    "batch_size_experiment",
    "layer_norm_ablation",
    "pre_norm_ablation",
    "no_pos_emb",
    "swiglu_ablation",
    "tokenizer_experiments",
    "download_data",
    "evaluate",
]


@pytest.fixture
def tiny_config(tmp_path):
    """A 1-layer model on a learnable token stream (a repeating ramp with a little noise)."""
    rng = np.random.default_rng(0)
    tokens = (np.arange(20_000) % 31 + (rng.random(20_000) < 0.05) * 7) % 32
    for split in ("train", "valid"):
        np.save(tmp_path / f"{split}.npy", tokens.astype(np.uint16))
    return load_config(
        None,
        {
            "data.train_tokens": str(tmp_path / "train.npy"),
            "data.val_tokens": str(tmp_path / "valid.npy"),
            "model.vocab_size": 32,
            "model.context_length": 16,
            "model.d_model": 16,
            "model.num_layers": 1,
            "model.num_heads": 2,
            "model.d_ff": 32,
            "training.batch_size": 8,
            "training.max_steps": 12,
            "training.eval_interval": 4,
            "training.eval_batches": 2,
            "training.device": "cpu",
            "training.out_dir": str(tmp_path / "runs"),
            "optim.lr": 1e-2,
            "optim.min_lr": 1e-3,
            "schedule.warmup_iters": 2,
        },
    )


def test_sweep_trains_plots_tables_and_records_divergence(tiny_config, tmp_path, capsys):
    runs = {"lr=1e-2": {}, "absurd lr": {"optim.lr": 1e30}}
    outcomes = run_sweep(tiny_config, runs, "toy", tmp_path / "pics", progress=False)

    assert [o.label for o in outcomes] == list(runs)
    ok, absurd = outcomes
    assert ok.status == "ok"
    assert ok.result.steps == 12 and ok.result.final_val_loss < ok.result.metrics[0]["val_loss"]
    assert ok.result.run_dir == tmp_path / "runs" / "toy" / "lr_1e-2"
    assert absurd.result.diverged and absurd.status == "NaN/inf"

    png, md = tmp_path / "pics" / "toy.png", tmp_path / "pics" / "toy.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = md.read_text()
    lines = [line for line in table.splitlines() if line.startswith("| absurd lr")]
    assert len(lines) == 1 and "yes (NaN/inf)" in lines[0]
    assert f"| lr=1e-2 | {ok.result.final_val_loss:.4f} |" in table
    assert "| lr=1e-2 |" in capsys.readouterr().out


def test_reuse_reads_back_a_finished_run_with_the_same_config(tiny_config, tmp_path, monkeypatch):
    (first,) = run_sweep(tiny_config, {"base": {}}, "one", tmp_path / "pics", progress=False)
    trained = []

    def fake_train(cfg, progress=True):
        trained.append(cfg.run_dir)
        return first.result

    monkeypatch.setattr(sweep, "train", fake_train)
    same, other = run_sweep(
        tiny_config,
        {"same": {}, "other lr": {"optim.lr": 5e-3}},
        "two",
        tmp_path / "pics",
        reuse=True,
    )
    assert same.result.run_dir == first.result.run_dir
    assert same.result.final_val_loss == first.result.final_val_loss
    assert same.result.metrics == first.result.metrics
    assert trained == [tmp_path / "runs" / "two" / "other_lr"]  # a different config is trained


def test_budget_sets_steps_from_probe_throughput(tiny_config, tmp_path, monkeypatch):
    probes = []

    def fake_train(cfg, progress=True):  # the probe: warm-up step slow, then 1000 tokens/s
        probes.append(cfg)
        rows = [{"step": i, "tokens_per_s": 10.0 if i == 1 else 1000.0} for i in range(1, 11)]
        return TrainResult(cfg.run_dir, 10, 0, 1.0, 3.0, 3.0, 3.0, metrics=rows)

    monkeypatch.setattr(sweep, "train", fake_train)
    # 0.8 * 600 s / 3 runs * 1000 tok/s / (8 x 16 tokens per step) = 1250 steps
    assert sweep.steps_for_budget(tiny_config, 600, 3, "b") == 1250
    assert probes[0].total_steps == 10 and probes[0].run_dir.parts[-2:] == ("b", "probe")


def test_out_of_memory_is_recorded_and_can_end_the_series(tiny_config, tmp_path, monkeypatch):
    def fake_train(cfg, progress=True):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(sweep, "train", fake_train)
    outcomes = run_sweep(
        tiny_config, {"b=1": {}, "b=2": {}}, "oom", tmp_path / "pics", stop_after_oom=True
    )
    assert [(o.label, o.status) for o in outcomes] == [("b=1", "out of memory")]
    assert "| b=1 | - | - | out of memory |" in (tmp_path / "pics" / "oom.md").read_text()
    assert not (tmp_path / "pics" / "oom.png").exists()  # nothing trained, nothing to plot


def test_other_errors_are_not_swallowed(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "train", lambda cfg, progress=True: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_sweep(tiny_config, {"a": {}}, "err", tmp_path / "pics")


def test_bad_override_fails_before_any_run(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "train", lambda cfg, progress=True: pytest.fail("a run started"))
    with pytest.raises(ValueError, match="min_lr"):
        run_sweep(tiny_config, {"ok": {}, "bad": {"optim.lr": 1e-5}}, "bad", tmp_path / "pics")


def test_loss_that_rises_counts_as_diverged(tmp_path):
    rows = [
        {"step": 0, "tokens": 0, "time_s": 0.0, "val_loss": 3.0},
        {"step": 10, "tokens": 100, "time_s": 1.0, "val_loss": 5.0},
    ]
    result = TrainResult.from_rows(tmp_path, rows)
    assert (result.initial_val_loss, result.final_val_loss, result.best_val_loss) == (3.0, 5.0, 3.0)
    assert RunOutcome("x", {}, result).status == "loss rose"
    assert "yes (loss rose)" in sweep.summary_table([RunOutcome("x", {}, result)])


def test_overrides_and_short_runs(tiny_config):
    cfg = with_overrides(tiny_config, {"model.norm": "none", "optim.lr": 3e-3})
    assert (cfg.model.norm, cfg.optim.lr, cfg.model.d_model) == ("none", 3e-3, 16)
    assert tiny_config.model.norm == "pre"  # the base is untouched
    short = with_overrides(tiny_config, short_run_overrides(tiny_config, 50))
    assert (short.total_steps, short.training.eval_interval, short.schedule.warmup_iters) == (
        50,
        5,
        2,
    )


def test_documents_split_on_endoftext_else_blank_lines(tmp_path):
    assert split_documents("a b\n<|endoftext|>\nc\n\nd<|endoftext|>  ") == ["a b", "c\n\nd"]
    assert split_documents("a\nb\n\n\nc\n \n d") == ["a\nb", "c", "d"]
    path = tmp_path / "t.txt"
    path.write_text("<|endoftext|>".join(f"doc {i}" for i in range(50)))
    picked = sample_documents(path, 10, seed=1)
    assert len(set(picked)) == 10 and set(picked) <= {f"doc {i}" for i in range(50)}
    assert picked == sample_documents(path, 10, seed=1) != sample_documents(path, 10, seed=2)
    assert len(sample_documents(path, 500)) == 50


class PairEncoder:
    """Two characters per token: the ratio is exactly bytes / ceil(chars / 2) per document."""

    def __init__(self):
        self.calls = []

    def encode(self, text):
        self.calls.append(text)
        return list(range((len(text) + 1) // 2))


def test_compression_ratio_and_throughput_count_what_they_encode():
    docs = ["abcd", "é", "xyz"]  # 4 + 2 + 3 bytes; 2 + 1 + 2 tokens
    assert compression_ratio(PairEncoder(), docs) == pytest.approx(9 / 5)
    enc = PairEncoder()
    t = measure_throughput(enc, docs, target_bytes=40)
    assert len(enc.calls) == 1 and enc.calls[0].startswith(
        "abcd<|endoftext|>é<|endoftext|>xyz<|endoftext|>abcd"
    )
    assert t.bytes_encoded == len(enc.calls[0].encode()) >= 40
    assert t.hours_for(t.bytes_per_s * 7200) == pytest.approx(2.0)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help(name, monkeypatch, capsys):
    """In-process (runpy) so that torch is imported once for all scripts, not once per script."""
    monkeypatch.setattr(sys, "argv", [f"script/{name}.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(f"script/{name}.py", run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_script_runs_from_the_command_line():
    out = subprocess.run(
        [sys.executable, "script/download_data.py", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "--only" in out and "tinystories" in out


def test_sweep_writes_its_own_folder_and_checks_outputs_first(tiny_config, tmp_path, monkeypatch):
    """By default the plot and table go beside the runs, never into tracked folders; an output
    folder that cannot be written stops the sweep before its first run."""
    monkeypatch.chdir(tmp_path)
    outcomes = run_sweep(tiny_config, {"a": {}}, "mine", progress=False)
    sweep_dir = tmp_path / "runs" / "mine"
    assert outcomes[0].result.run_dir == sweep_dir / "a"
    assert (sweep_dir / "mine.md").exists() and (sweep_dir / "mine.png").exists()
    assert not (tmp_path / "pics").exists()
    (tmp_path / "blocker").write_text("a file")
    monkeypatch.setattr(sweep, "train", lambda cfg, progress=True: pytest.fail("a run started"))
    with pytest.raises(OSError, match="is a file, not a directory"):
        run_sweep(tiny_config, {"a": {}}, "late", tmp_path / "blocker" / "pics", progress=False)


def test_runs_side_by_side_give_the_same_results(tiny_config, tmp_path):
    """jobs=2: two runs at a time in processes of their own, the same outcomes as one by one."""
    runs = {"a": {}, "b": {"optim.lr": 3e-3}}
    one = run_sweep(tiny_config, runs, "seq", progress=False)
    two = run_sweep(tiny_config, runs, "par", progress=False, jobs=2)
    for x, y in zip(one, two):
        assert x.label == y.label and x.result.final_val_loss == y.result.final_val_loss
