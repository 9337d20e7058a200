"""End-to-end training through script/train.py's own code path: data preparation, training,
checkpoints, interruption and resume, generation, and the errors promised for bad inputs."""

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cs336_basics.training.trainer as trainer
from cs336_basics.checkpoint import read_checkpoint
from cs336_basics.config import SECTIONS, load_config
from cs336_basics.demo_corpus import END_OF_TEXT, generate_corpus
from cs336_basics.tokenizer.tokenizer import Tokenizer
from cs336_basics.training import run as train_script
from cs336_basics.training.evaluation import estimate_loss
from cs336_basics.training.plots import plot_curves
from cs336_basics.training.prepare import (
    TINYSTORIES_FILES,
    default_run,
    prepare_data,
    slice_text,
)
from cs336_basics.training.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "script" / "train.py"


TINY = {
    "model.vocab_size": 300,
    "model.context_length": 16,
    "model.d_model": 16,
    "model.num_layers": 1,
    "model.num_heads": 2,
    "model.d_ff": 32,
    "optim.lr": 1e-2,
    "optim.min_lr": 1e-3,
    "schedule.warmup_iters": 2,
    "schedule.cosine_cycle_iters": 8,
    "training.batch_size": 4,
    "training.grad_accum_steps": 2,
    "training.max_steps": 8,
    "training.eval_interval": 4,
    "training.eval_batches": 2,
    "training.log_interval": 1,
    "training.checkpoint_interval": 3,
    "training.keep_last": 10,
    "training.device": "cpu",
}


@pytest.fixture(scope="module")
def data_args(tmp_path_factory) -> dict[str, object]:
    """Tiny demo-corpus data, prepared once for the module (as the default run prepares it)."""
    d = tmp_path_factory.mktemp("data")
    data = {
        "data.demo_corpus": True,
        "data.demo_corpus_bytes": 40_000,
        "data.train_text": str(d / "train.txt"),
        "data.val_text": str(d / "valid.txt"),
        "data.tokenizer_dir": str(d / "tok"),
        "data.train_tokens": str(d / "train.npy"),
        "data.val_tokens": str(d / "valid.npy"),
    }
    cfg = load_config(ROOT / "configs/demo.toml", {**TINY, **data})
    prepare_data(cfg.data, cfg.model.vocab_size, progress=False)
    tokenizer = Tokenizer.from_dir(d / "tok", ["<|endoftext|>"])
    for split in ("train", "valid"):  # the arrays hold the texts, in order
        text = (d / f"{split}.txt").read_text()
        assert tokenizer.decode(np.load(d / f"{split}.npy").tolist()) == text
    return data


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, data_args) -> Path:
    """The uninterrupted reference run."""
    tmp_path = tmp_path_factory.mktemp("whole")
    assert _run(tmp_path, data_args, "whole") == 0
    return tmp_path / "runs" / "whole"


def _argv(overrides: dict[str, object], *flags: str) -> list[str]:
    return [f"--{k}={v}" for k, v in overrides.items()] + [
        "--config",
        str(ROOT / "configs/demo.toml"),
        *flags,
    ]


def _run(tmp_path, data_args, name, *flags, **extra) -> int:
    overrides = {
        **TINY,
        **data_args,
        "training.out_dir": str(tmp_path / "runs"),
        "training.run_name": name,
        **extra,
    }
    return train_script.main(_argv(overrides, "--samples", "0", *flags))


def _final_state(run_dir: Path) -> dict:
    return read_checkpoint(RunFolder(run_dir).checkpoints()[-1])


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _split_full_validation(rows: list[dict]) -> tuple[list[float], list[dict]]:
    full = [r["full_val_loss"] for r in rows if "full_val_loss" in r]
    return full, [r for r in rows if "full_val_loss" not in r]


def _same_training(a: Path, b: Path) -> None:
    sa, sb = _final_state(a), _final_state(b)
    assert sa["iteration"] == sb["iteration"] == TINY["training.max_steps"]
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    (fa, ra), (fb, rb) = (_split_full_validation(_rows(d)) for d in (a, b))
    assert fa == fb  # the whole-validation-set pass of a budgeted run (the demo has a budget)
    assert (
        [r["step"] for r in ra]
        == [r["step"] for r in rb]
        == list(range(TINY["training.max_steps"] + 1))
    )
    for x, y in zip(ra, rb):
        assert (x["train_loss"], x["lr"]) == (y["train_loss"], y["lr"])
        if (
            x["val_loss"] is not None and y["val_loss"] is not None
        ):  # an interrupted run evaluates at its end
            assert x["val_loss"] == y["val_loss"]
    assert ra[-1]["val_loss"] == rb[-1]["val_loss"] is not None


def _interrupt_at(monkeypatch, step: int, action) -> None:
    """Call `action()` when the batch of optimizer step `step` is drawn."""
    calls = {"n": 0}
    real = trainer.windows

    def windows(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == (step - 1) * TINY["training.grad_accum_steps"] + 1:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "windows", windows)


def test_resume_after_sigterm_reproduces_uninterrupted_run(
    tmp_path, data_args, whole_run, monkeypatch
):
    _interrupt_at(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert _run(tmp_path, data_args, "cut") == 143  # finishes step 5, saves, exits
    assert read_checkpoint(RunFolder(tmp_path / "runs/cut").checkpoints()[-1])["iteration"] == 5
    monkeypatch.undo()
    assert _run(tmp_path, data_args, "cut", "--resume") == 0
    _same_training(whole_run, tmp_path / "runs/cut")
    assert (tmp_path / "runs/cut/loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert load_config(tmp_path / "runs/cut/config.toml").model.d_model == TINY["model.d_model"]


def test_resume_after_crash_truncates_the_log(tmp_path, data_args, whole_run, monkeypatch):
    """A crash at step 6 leaves rows 0..5 but a checkpoint at step 3: the resumed run drops
    rows 4..5, redoes those steps identically and ends where the uninterrupted run does."""

    def crash():
        raise RuntimeError("simulated crash")

    _interrupt_at(monkeypatch, 6, crash)
    assert _run(tmp_path, data_args, "crash") == 1
    assert [r["step"] for r in _rows(tmp_path / "runs/crash")] == list(range(6))
    monkeypatch.undo()
    assert _run(tmp_path, data_args, "crash", "--resume") == 0
    _same_training(whole_run, tmp_path / "runs/crash")


def test_shorter_run_then_longer_resume_matches(tmp_path, data_args, whole_run):
    """Stopping via max_steps and resuming with more steps is exact when the schedule is pinned
    (TINY pins schedule.cosine_cycle_iters to the full run's length)."""
    assert _run(tmp_path, data_args, "grow", **{"training.max_steps": 3}) == 0
    assert _run(tmp_path, data_args, "grow", "--resume") == 0
    _same_training(whole_run, tmp_path / "runs/grow")


def test_training_learns_and_generates(tmp_path, data_args, capsys):
    overrides = {
        **TINY,
        **data_args,
        "training.out_dir": str(tmp_path / "runs"),
        "training.max_steps": 80,
        "optim.lr": 3e-2,
        "schedule.cosine_cycle_iters": "none",
        "training.eval_interval": 40,
        "training.log_interval": 10,
        "training.checkpoint_interval": 20,
        "training.keep_last": 2,
    }
    assert train_script.main(_argv(overrides, "--samples", "2", "--sample-tokens", "8")) == 0
    out = capsys.readouterr().out
    assert "Generated stories" in out and out.count("--- story") == 2 and "Artifacts:" in out
    run = tmp_path / "runs" / "demo"
    val = [r["val_loss"] for r in _rows(run) if r["val_loss"] is not None]
    assert (
        val[0] > math.log(300) - 0.5 and val[-1] < val[0] - 1.0
    )  # starts near uniform, then learns
    lrs = {r["step"]: r["lr"] for r in _split_full_validation(_rows(run))[1]}
    assert (
        lrs[80] == TINY["optim.min_lr"] < lrs[70] < lrs[10]
    )  # the cosine ends exactly at the last step
    assert len(RunFolder(run).checkpoints()) == 2  # keep_last
    model, cfg = trainer.load_trained_model(run)
    assert not model.training and cfg.model.d_model == TINY["model.d_model"]
    assert (run / "samples.txt").read_text().startswith("Once upon a time")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_args, monkeypatch, capsys):
    real = trainer.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return (
            loss * float("nan") if calls["n"] > 2 * 4 else loss
        )  # from step 5 on (2 micro-batches a step)

    monkeypatch.setattr(trainer, "cross_entropy", poisoned)
    cfg = load_config(
        None,
        {**TINY, **data_args, "training.out_dir": str(tmp_path), "training.eval_interval": 100},
    )
    result = trainer.train(cfg, progress=False)
    assert result.diverged and result.steps == 4
    assert [read_checkpoint(p)["iteration"] for p in RunFolder(result.run_dir).checkpoints()] == [3]
    assert _rows(result.run_dir)[-1]["train_loss"] is None  # the NaN step is logged as null


def test_wandb_offline_needs_no_account(tmp_path, data_args, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    assert _run(tmp_path, data_args, "wb", "--wandb", **{"training.max_steps": 2}) == 0
    assert list((tmp_path / "runs/wb/wandb").glob("offline-run-*/run-*.wandb"))


# ---------------------------------------------------------------- bad inputs: clear errors, no traceback


def _error(capsys, argv) -> str:
    code = train_script.main(argv)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    return err


def test_missing_data_files(tmp_path, capsys):
    paths = {
        "data.demo_corpus": False,
        "data.train_tokens": str(tmp_path / "no.npy"),
        "data.val_tokens": str(tmp_path / "no_val.npy"),
        "data.tokenizer_dir": str(tmp_path / "tok"),
        "data.val_text": "none",
        "training.out_dir": str(tmp_path),
    }
    err = _error(capsys, _argv({**TINY, **paths, "data.train_text": "none"}))
    assert "no.npy not found" in err and "data.train_text" in err
    err = _error(capsys, _argv({**TINY, **paths, "data.train_text": str(tmp_path / "missing.txt")}))
    assert "missing.txt not found" in err and "download_data" in err


def test_token_ids_beyond_vocab(tmp_path, capsys, data_args):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([1, 2, 3, 5000] * 100, dtype=np.uint16))
    err = _error(
        capsys,
        _argv(
            {**TINY, **data_args, "data.train_tokens": str(bad), "training.out_dir": str(tmp_path)}
        ),
    )
    assert "5000" in err and "vocab" in err


def test_bad_config_values(tmp_path, capsys):
    assert "training.batch_size must be positive" in _error(
        capsys, _argv({"training.batch_size": 0})
    )
    assert "optim.lr must be a number" in _error(capsys, _argv({"optim.lr": "fast"}))
    preset = tmp_path / "bad.toml"
    preset.write_text("[model]\nd_modle = 64\n")
    assert "model.d_modle" in _error(capsys, ["--config", str(preset)])
    with pytest.raises(SystemExit) as e:  # an unknown flag is argparse's usage error
        train_script.main(["--model.d_modle", "64"])
    assert e.value.code == 2 and "--model.d_modle" in capsys.readouterr().err


def test_resume_with_different_model_shape(tmp_path, data_args, capsys):
    assert _run(tmp_path, data_args, "shape", **{"training.max_steps": 2}) == 0
    assert _run(tmp_path, data_args, "shape", "--resume", **{"model.d_model": 32}) == 1
    err = capsys.readouterr().err
    assert "different model shape" in err and "model.d_model: checkpoint 16, config 32" in err
    # A fresh run would overwrite it: refused (the demo preset opts into overwriting; others don't).
    assert _run(tmp_path, data_args, "shape", **{"training.overwrite": False}) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert _final_state(tmp_path / "runs/shape")["iteration"] == 2  # nothing lost


def test_unwritable_output_folder(tmp_path, data_args, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    err = _error(capsys, _argv({**TINY, **data_args, "training.out_dir": str(blocker / "runs")}))
    assert "cannot create the run folder" in err


def test_help_lists_every_option_with_default():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    described = {
        opt: (words, default)
        for opt, words, default in re.findall(r"(--\w+\.\w+) VALUE (.*?)\(default: ([^)]*)\)", text)
    }
    assert len(described) == sum(
        len(dataclasses.fields(cls)) for cls in SECTIONS.values()
    )  # every option
    assert all(words.strip() for words, _ in described.values())  # each one explained
    assert described["--model.d_model"][1] == "128" and described["--optim.betas"][1] == "0.9,0.95"
    assert described["--training.max_steps"][1] == "600"  # the default run's preset
    for flag in ("--resume", "--compile", "--device", "--wandb", "--config"):
        assert flag in text


# ---------------------------------------------------------------- pieces


def test_estimate_loss_matches_a_direct_computation(data_args):
    tokens = np.load(data_args["data.val_tokens"], mmap_mode="r")
    torch.manual_seed(0)
    model = trainer.TransformerLM(300, 16, 16, 1, 2, 32, 10000.0)
    ctx, n = 16, (len(tokens) - 1) // 16
    x = torch.tensor(np.stack([tokens[i * ctx : i * ctx + ctx] for i in range(n)]).astype(np.int64))
    y = torch.tensor(
        np.stack([tokens[i * ctx + 1 : i * ctx + ctx + 1] for i in range(n)]).astype(np.int64)
    )
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    got = estimate_loss(
        model, tokens, batch_size=7, context_length=ctx, num_batches=None, device="cpu"
    )
    assert got == pytest.approx(expected, rel=1e-5)
    assert model.training  # mode restored


def test_plot_curves_skips_missing_values(tmp_path):
    rows = [
        {"tokens": 0, "time_s": 0.0, "train_loss": None, "val_loss": 5.0},
        {"tokens": 64, "time_s": 1.0, "train_loss": 4.0, "val_loss": None},
        {"tokens": 128, "time_s": 2.0, "train_loss": float("nan"), "val_loss": 3.0},
    ]
    plot_curves({"a": rows, "b": rows[:1]}, tmp_path / "x.png", title="t")
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_corpus_is_deterministic_and_separated():
    a, b = generate_corpus(20_000, seed=0), generate_corpus(20_000, seed=0)
    assert a == b and a != generate_corpus(20_000, seed=1)
    assert len(a.encode()) >= 20_000 and a.endswith(f"\n{END_OF_TEXT}\n")
    stories = a.split(f"\n{END_OF_TEXT}\n")[:-1]
    assert len(stories) > 10 and all(s.strip() and END_OF_TEXT not in s for s in stories)
    assert len(set(stories)) == len(stories)


def test_slice_text_cuts_after_a_whole_document(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("one\n<|endoftext|>\ntwo two\n<|endoftext|>\nthree three three\n<|endoftext|>\n")
    out = slice_text(src, tmp_path / "s.txt", 40, ["<|endoftext|>"])
    assert out.read_text() == "one\n<|endoftext|>\ntwo two\n<|endoftext|>\n"
    assert slice_text(src, tmp_path / "s2.txt", 10_000, ["<|endoftext|>"]) == src


def test_default_run_uses_tinystories_when_downloaded(tmp_path):
    description, overrides = default_run(tmp_path, online=False)
    assert "generated" in description and overrides == {}
    for name in TINYSTORIES_FILES:
        (tmp_path / name).write_text("Once upon a time.\n<|endoftext|>\n")
    description, overrides = default_run(tmp_path, online=False)
    assert "TinyStories" in description and overrides["data.train_text"] == str(
        tmp_path / TINYSTORIES_FILES[0]
    )
    cfg = load_config(ROOT / "configs/demo.toml", overrides)
    assert (
        not cfg.data.demo_corpus
        and cfg.data.max_text_bytes
        and str(tmp_path) in cfg.data.train_tokens
    )


def test_default_run_fetches_the_validation_text_or_says_why_not(tmp_path, monkeypatch):
    import cs336_basics.download as download

    said = []
    monkeypatch.setattr(download, "fetch_tinystories_valid", lambda d, say: say("offline") or None)
    description, overrides = default_run(tmp_path, say=said.append)
    assert overrides == {} and "generated" in description
    assert said == ["offline Training on the built-in generated stories instead."]

    def fetched(data_dir, say):
        path = data_dir / TINYSTORIES_FILES[1]
        path.write_text("".join(f"Story {i}.\n<|endoftext|>\n" for i in range(40)))
        return path

    monkeypatch.setattr(download, "fetch_tinystories_valid", fetched)
    description, overrides = default_run(tmp_path)
    train, valid = Path(overrides["data.train_text"]), Path(overrides["data.val_text"])
    assert "validation text, split by documents" in description
    assert train.read_text().count("<|endoftext|>") == 36 and "Story 9." in valid.read_text()
    monkeypatch.setattr(download, "fetch_tinystories_valid", lambda *a, **k: pytest.fail("again"))
    assert default_run(tmp_path)[1] == overrides  # split once, then reused


def test_accumulated_micro_batches_equal_one_large_batch(tmp_path, data_args):
    """k micro-batches of b take the same step as one batch of k*b: the same windows (drawn in
    the same order from the step's generator) and the same mean gradient."""
    results = {}
    for batch, accum in ((8, 1), (4, 2), (2, 4)):
        cfg = load_config(
            None,
            {**TINY, **data_args, "training.out_dir": str(tmp_path), "training.max_steps": 3,
             "training.batch_size": batch, "training.grad_accum_steps": accum,
             "training.run_name": f"b{batch}"},
        )  # fmt: skip
        results[batch] = trainer.train(cfg, progress=False)
    states = {b: _final_state(r.run_dir)["model"] for b, r in results.items()}
    for b in (4, 2):
        for key, value in states[8].items():
            torch.testing.assert_close(states[b][key], value, rtol=1e-5, atol=1e-6)
        for x, y in zip(results[b].metrics[1:], results[8].metrics[1:]):  # row 0: no training
            assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)


def test_resume_with_muon_and_wsd_reproduces_the_whole_run(tmp_path, data_args, monkeypatch):
    recipe = {"optim.name": "muon", "schedule.name": "wsd", "optim.embed_lr": 3e-2,
              "model.qk_norm": True, "model.value_embeddings": 1}  # fmt: skip
    assert _run(tmp_path, data_args, "whole", **recipe) == 0
    _interrupt_at(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert _run(tmp_path, data_args, "cut", **recipe) == 143
    monkeypatch.undo()
    assert _run(tmp_path, data_args, "cut", "--resume", **recipe) == 0
    _same_training(tmp_path / "runs/whole", tmp_path / "runs/cut")


def test_schedules_follow_the_run_a_budget_allows():
    """cosine and wsd span `total` steps when a time budget makes the run shorter than
    max_steps, so that both end fully decayed where the budget ends."""
    for name in ("cosine", "wsd"):
        cfg = load_config(None, {**TINY, "training.max_steps": 600, "schedule.name": name,
                                 "schedule.warmup_iters": 10, "schedule.cosine_cycle_iters": "none"})  # fmt: skip
        peak, low = cfg.optim.lr, cfg.optim.min_lr
        assert trainer.lr_at(cfg, 5, total=100) == pytest.approx(peak / 2)  # warmup: in steps
        assert trainer.lr_at(cfg, 100, total=100) == pytest.approx(low)
        assert trainer.lr_at(cfg, 600) == pytest.approx(low)
        assert trainer.lr_at(cfg, 100) > 0.9 * peak  # without the budget: far from decayed
    cfg = load_config(None, {**TINY, "schedule.name": "wsd", "schedule.warmup_iters": 10,
                             "schedule.decay_fraction": 0.2})  # fmt: skip
    assert trainer.lr_at(cfg, 80, total=100) == cfg.optim.lr  # the decay starts at 80% ...
    assert trainer.lr_at(cfg, 90, total=100) == pytest.approx((cfg.optim.lr + cfg.optim.min_lr) / 2)


def test_optimizer_groups_follow_the_config():
    model = trainer.TransformerLM(300, 16, 16, 2, 2, 32, 10000.0)
    cfg = load_config(None, {**TINY, "model.num_layers": 2})
    (only,) = trainer.build_optimizer(model, cfg).param_groups  # the handout's: one group
    assert len(only["params"]) == len(list(model.parameters()))
    cfg = load_config(None, {**TINY, "optim.name": "muon", "optim.muon_lr": 0.02,
                             "optim.embed_lr": 0.3, "optim.head_lr": 0.004})  # fmt: skip
    groups = trainer.build_optimizer(model, cfg).param_groups
    by_lr = {g["lr"]: g for g in groups}
    assert by_lr[0.02]["use_muon"] and all(p.ndim == 2 for p in by_lr[0.02]["params"])
    assert by_lr[0.3]["params"] == [model.token_embeddings.weight]
    assert by_lr[0.004]["params"] == [model.lm_head.weight]
    assert by_lr[cfg.optim.lr]["weight_decay"] == 0.0  # gains: no decay
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_information_meter_counts_each_choice():
    from cs336_basics.demo_corpus import InformationMeter, information

    rng = InformationMeter(0)
    rng.choice("abcd")
    (picked,) = rng.choices("xy", weights=(1, 3))
    rng.sample(range(5), 2)
    expected = math.log(4) - math.log((1 if picked == "x" else 3) / 4) + math.log(5 * 4)
    assert rng.nats == pytest.approx(expected)
    text, nats = information(20_000, seed=0)
    assert text == generate_corpus(20_000, seed=0)  # measuring changes nothing
    stories = text.count(END_OF_TEXT)
    assert 10 < nats / stories < 200  # tens of nats a story: a few choices among tens


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path, data_args, whole_run):
    """A newest checkpoint cut short (a full disk, a killed copy) is named, and --resume
    continues from the one before it, on the same loss curve."""
    assert _run(tmp_path, data_args, "cut", **{"training.max_steps": 6}) == 0
    newest = RunFolder(tmp_path / "runs/cut").checkpoints()[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=f"{newest.name} is truncated or corrupt"):
        assert _run(tmp_path, data_args, "cut", "--resume") == 0
    _same_training(whole_run, tmp_path / "runs/cut")
