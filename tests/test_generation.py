"""Decoding: KV-cache equivalence, greedy vs a naive loop, top-k/top-p filters, seeds, stop tokens, text."""

import math
import runpy
import sys

import pytest
import torch

from cs336_basics.generation import (
    generate,
    generate_samples,
    generate_text,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from cs336_basics.nn.transformer import TransformerLM
from cs336_basics.tokenizer.tokenizer import Tokenizer

VOCAB, CONTEXT = 257, 16  # 256 bytes + <|endoftext|>, so the byte tokenizer below fits


def tiny_model(**variant) -> TransformerLM:
    torch.manual_seed(0)
    model = TransformerLM(
        VOCAB,
        CONTEXT,
        d_model=32,
        num_layers=2,
        num_heads=4,
        d_ff=48,
        rope_theta=10000.0,
        **variant,
    )
    for table in model.value_embeddings:  # their scales start at 0: make them count
        torch.nn.init.constant_(table.scale, 0.5)
    return model


@pytest.fixture(scope="module")
def model() -> TransformerLM:
    return tiny_model()


def greedy_reference(model, prompt: list[int], n: int) -> list[int]:
    """Argmax loop without a cache; the window slides as the module docstring says."""
    window, out = prompt[-CONTEXT:], []
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([window]))[0, -1].argmax()))
            window = window + out[-1:]
            if len(window) > CONTEXT:
                window = window[-(CONTEXT // 2) :]
    return out


ALL_SWITCHES = {
    "qk_norm": True,
    "ffn": "relu2",
    "logit_softcap": 5.0,
    "value_embeddings": 2,
    "tie_embeddings": True,
}


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"norm": "post", "positions": "nope"},
        {"norm": "none", "ffn": "silu"},
        ALL_SWITCHES,
        {**ALL_SWITCHES, "attention": "sdpa"},
    ],
    ids=str,
)
def test_cached_decoding_matches_full_forward(variant):
    model = tiny_model(**variant)
    ids = torch.randint(0, VOCAB, (2, CONTEXT), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
        cache = model.make_kv_cache(2)
        steps = [model(ids[:, :5], kv_cache=cache)]  # a prefill, then one token at a time
        steps += [model(ids[:, i : i + 1], kv_cache=cache) for i in range(5, CONTEXT)]
    assert cache.length == CONTEXT
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_matches_uncached_argmax_loop(model):
    prompt = [72, 101, 108, 108, 111]
    expected = greedy_reference(model, prompt, 9)
    assert generate(model, prompt, 9, temperature=0) == expected
    assert (
        generate(model, prompt, 9, temperature=1e-8, generator=torch.Generator().manual_seed(0))
        == expected
    )
    assert generate_samples(model, prompt, 3, 9, temperature=0) == [expected] * 3
    assert generate(model, prompt, 0, temperature=0) == []


def test_generation_past_the_context_slides_the_window(model):
    prompt = list(range(40, 40 + CONTEXT + 5))  # longer than the context: only its tail is seen
    expected = greedy_reference(model, prompt, 3 * CONTEXT)
    assert generate(model, prompt, 3 * CONTEXT, temperature=0) == expected
    assert generate(model, prompt[-CONTEXT:], 4, temperature=0) == expected[:4]


@pytest.mark.parametrize("variant", [ALL_SWITCHES, {**ALL_SWITCHES, "attention": "sdpa"}], ids=str)
def test_generation_honours_model_switches(variant):
    model = tiny_model(**variant)
    prompt = list(range(40, 40 + CONTEXT + 5))
    expected = greedy_reference(model, prompt, 2 * CONTEXT)
    assert generate(model, prompt, 2 * CONTEXT, temperature=0) == expected
    assert expected != greedy_reference(tiny_model(), prompt, 2 * CONTEXT)


def test_top_k_one_equals_greedy(model):
    prompt = [1, 2, 3]
    greedy = generate(model, prompt, 10, temperature=0)
    sampled = generate(
        model, prompt, 10, temperature=1.5, top_k=1, generator=torch.Generator().manual_seed(3)
    )
    assert sampled == greedy


def test_top_k_filter_keeps_exactly_k():
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.0, 1.0], [4.0, 0.0, 1.0, 3.0, 2.0]])
    kept = top_k_filter(logits, 2)
    assert torch.isfinite(kept).tolist() == [
        [False, True, False, True, False],
        [True, False, False, True, False],
    ]
    assert torch.equal(kept[torch.isfinite(kept)], torch.tensor([3.0, 2.0, 4.0, 3.0]))
    assert torch.equal(top_k_filter(logits, 9), logits)


@pytest.mark.parametrize(
    "p, kept",
    [
        (1e-6, {1}),
        (0.49, {1}),
        (0.51, {1, 3}),
        (0.7, {1, 3}),
        (0.76, {1, 2, 3}),
        (0.95, {0, 1, 2, 3}),
        (1.0, {0, 1, 2, 3}),
    ],
)
def test_top_p_filter_keeps_the_smallest_set_reaching_p(p, kept):
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])  # sorted: 0.5 (id 1), 0.25 (3), 0.15 (2), 0.1 (0)
    logits = probs.log() + 7.0  # any shift gives the same distribution
    filtered = top_p_filter(logits[None], p)[0]
    assert {i for i in range(4) if math.isfinite(filtered[i])} == kept
    assert torch.equal(filtered[list(kept)], logits[list(kept)])  # survivors untouched


def test_top_p_filter_rows_are_independent():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9], [0.3, 0.45, 0.25]])
    filtered = top_p_filter(probs.log(), 0.65)
    assert torch.isfinite(filtered).tolist() == [
        [True, False, False],
        [False, False, True],
        [True, True, False],
    ]


def test_sampling_draws_only_from_the_nucleus():
    logits = torch.tensor([0.1, 0.5, 0.15, 0.25]).log().expand(2000, -1)
    draws = sample_next(
        logits, temperature=1.0, top_p=0.7, generator=torch.Generator().manual_seed(0)
    )
    counts = torch.bincount(draws, minlength=4).tolist()
    assert counts[0] == counts[2] == 0
    assert 1200 < counts[1] < 1470  # renormalized: 0.5 / 0.75 = 2/3 of 2000


def test_seeded_sampling_is_reproducible(model):
    def run(seed):
        return generate_samples(
            model, [5, 6, 7], 3, 12, temperature=1.0, generator=torch.Generator().manual_seed(seed)
        )

    first = run(0)
    assert run(0) == first
    assert run(1) != first
    assert len({tuple(s) for s in first}) > 1  # the batch's samples differ from one another


def test_stop_token_stops(model):
    prompt = [10, 20, 30]
    greedy = generate(model, prompt, 12, temperature=0)
    stop = greedy[4]
    first = greedy.index(stop)
    assert generate(model, prompt, 12, temperature=0, stop_id=stop) == greedy[: first + 1]
    samples = generate_samples(
        model,
        prompt,
        4,
        12,
        temperature=2.0,
        stop_id=stop,
        generator=torch.Generator().manual_seed(0),
    )
    for s in samples:
        assert stop not in s[:-1]
        assert s[-1] == stop or len(s) == 12


class ShiftedTokenizer:
    """A tokenizer whose ids are off by `shift`: the wrong vocabulary for the model."""

    def __init__(self, shift: int):
        self.shift = shift

    def encode(self, text: str) -> list[int]:
        return [b + self.shift for b in text.encode()]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - self.shift for i in ids).decode()


def byte_tokenizer() -> Tokenizer:
    return Tokenizer({i: bytes([i]) for i in range(256)}, [], special_tokens=["<|endoftext|>"])


def test_generate_text_round_trip(model):
    tokenizer = byte_tokenizer()
    eot = tokenizer.encode("<|endoftext|>")
    assert eot == [256]
    greedy = generate(model, tokenizer.encode("Once"), 20, temperature=0, stop_id=256)
    expected = tokenizer.decode([t for t in greedy if t != 256])
    assert generate_text(model, tokenizer, "Once", max_new_tokens=20, temperature=0) == [expected]

    texts = generate_text(model, tokenizer, "Once", max_new_tokens=20, num_samples=3, seed=7)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert (
        generate_text(model, tokenizer, "Once", max_new_tokens=20, num_samples=3, seed=7) == texts
    )

    from_eot = generate(
        model, eot, 5, temperature=0, stop_id=256
    )  # an empty prompt starts a document
    assert generate_text(model, tokenizer, "", max_new_tokens=5, temperature=0) == [
        tokenizer.decode([t for t in from_eot if t != 256])
    ]


def test_bad_arguments_raise_clear_errors(model):
    tokenizer = byte_tokenizer()
    with pytest.raises(ValueError, match="not a single token"):
        generate_text(model, tokenizer, "hi", stop_token="<|stop|>")
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text(model, tokenizer, "", stop_token=None)
    for kwargs, message in [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ]:
        with pytest.raises(ValueError, match=message):
            generate(model, [1, 2], 3, **kwargs)
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        generate(model, [], 3)
    with pytest.raises(ValueError, match=f"prompt_ids: .* token id {VOCAB + 3}, outside"):
        generate(model, [5, VOCAB + 3], 3)
    with pytest.raises(ValueError, match="prompt_ids: .* token id -196"):
        generate_text(model, ShiftedTokenizer(-300), "hi", stop_token=None)


def test_generate_script_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["generate_and_decode.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path("script/generate_and_decode.py", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--checkpoint",
        "--tokenizer-dir",
        "--prompt",
        "--max-new-tokens",
        "--temperature",
        "--top-p",
        "--top-k",
        "--num-samples",
        "--seed",
        "--device",
    ):
        assert flag in out


def test_generate_script_end_to_end(tmp_path, monkeypatch, capsys):
    from cs336_basics.checkpoint import save_checkpoint
    from cs336_basics.config import config_to_dict, load_config

    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    byte_tokenizer().save_dir(tokenizer_dir)
    model = tiny_model()
    shape = {
        k: getattr(model.config, k)
        for k in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff")
    }
    cfg = load_config(
        None,
        {
            **{f"model.{k}": v for k, v in shape.items()},
            "training.max_steps": 1,
            "data.tokenizer_dir": str(tokenizer_dir),
        },
    )
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        0,
        checkpoint,
        extra={"config": config_to_dict(cfg)},
    )

    argv = [
        "generate_and_decode.py",
        "--checkpoint",
        str(checkpoint),
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
        "--num-samples",
        "2",
        "--device",
        "cpu",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path("script/generate_and_decode.py", run_name="__main__")
    out = capsys.readouterr().out
    expected = generate_text(model, byte_tokenizer(), "Hi", max_new_tokens=6, temperature=0)[0]
    assert out.count(f"\nHi{expected}\n") == 2
    assert "2 samples in" in out

    monkeypatch.setattr(
        sys, "argv", ["generate_and_decode.py", "--checkpoint", str(tmp_path / "missing.pt")]
    )
    with pytest.raises(SystemExit, match="not found"):
        runpy.run_path("script/generate_and_decode.py", run_name="__main__")
    monkeypatch.setattr(sys, "argv", argv + ["--tokenizer-dir", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="vocab.json"):
        runpy.run_path("script/generate_and_decode.py", run_name="__main__")
