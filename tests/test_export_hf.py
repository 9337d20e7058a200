"""The Hugging Face export, loaded back by transformers and tokenizers (offline): the Llama
computes our logits and greedy tokens, and the tokenizer.json gives our ids."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from cs336_basics.config import load_config
from cs336_basics.demo_corpus import generate_corpus
from cs336_basics.export import (
    NotExportableError,
    check_llama_compatible,
    export_checkpoint,
    export_hf,
)
from cs336_basics.export.llama import interleaved_to_halves
from cs336_basics.export.tokenizer_json import tokenizer_json
from cs336_basics.generation import generate
from cs336_basics.nn.layers import RotaryPositionalEmbedding
from cs336_basics.nn.transformer import ModelConfig, TransformerLM
from cs336_basics.tokenizer.bpe import train_bpe
from cs336_basics.tokenizer.tokenizer import Tokenizer
from cs336_basics.training.trainer import load_trained_model, train

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["<|endoftext|>", "<|pad|>", "<|endoftext|><|endoftext|>"]
# Text beyond the generated stories, so that the vocab holds multi-byte tokens.
EXTRA = (
    "Café crème, naïve façade — «Ünïcödé» … 日本語のテキスト、中文。 Ελληνικά Русский "
    "😀👍🏽 👨‍👩‍👧 🇫🇷\tTabs\t\tand   spaces\n\n\n  it's we'll 3.14159\n"
)
TEXTS = [
    "Once upon a time, there was a little dog.<|endoftext|>The end.",
    "Café crème, naïve façade — Ünïcödé… «quotes» and ſ ﬁ ligatures",
    "日本語のテキスト、中文字符。 Ελληνικά Русский текст עברית العربية हिन्दी",
    "emoji 😀👍🏽 👨‍👩‍👧 🇫🇷 flags 🏳️‍🌈 and a lone \u200d joiner",
    "whitespace   runs\t\ttabs\n\n\nnewlines  \n  \u00a0nbsp\u3000ideographic \r\n end   ",
    "it's we'll they've I'M don't 12345 3.14159 x=y+1; (a) [b] {c} <|endoftext|trailing",
    "<|endoftext|><|endoftext|><|endoftext|><|pad|> specials back to back <|endoftext|>",
    "",
    "   ",
    "\n",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("bpe") / "corpus.txt"
    path.write_text(generate_corpus(6_000, seed=1) + EXTRA * 5, encoding="utf-8")
    vocab, merges = train_bpe(path, 420, SPECIALS)
    return Tokenizer(vocab, merges, SPECIALS)


def _tiny_model(seed: int, **options) -> TransformerLM:
    """Non-default eps, theta and widths, so a field mapped wrong shows in the logits; the
    norm gains are random, not ones, so a norm mapped to the wrong place shows too."""
    torch.manual_seed(seed)
    model = TransformerLM(
        vocab_size=450,
        context_length=48,
        d_model=48,
        num_layers=2,
        num_heads=4,
        d_ff=96,
        rope_theta=500.0,
        eps=1e-2,
        **options,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_final.weight")):
                p.uniform_(0.5, 1.5)
    return model.eval()


def _assert_same_model(model: TransformerLM, out: Path, prompt: list[int]) -> None:
    """Logits within 1e-4 on random ids, and the same greedy continuation of `prompt`."""
    cfg = model.config
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert hf.config.rms_norm_eps == cfg.eps
    assert hf.config.rope_parameters["rope_theta"] == cfg.rope_theta
    assert hf.config.max_position_embeddings == cfg.context_length
    assert hf.config.tie_word_embeddings == cfg.tie_embeddings
    ids = torch.randint(
        0, cfg.vocab_size, (3, cfg.context_length), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)

    eos = hf.generation_config.eos_token_id
    new = cfg.context_length - len(prompt)
    expected = generate(model, prompt, new, temperature=0, stop_id=eos)
    with torch.no_grad():
        got = hf.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=new,
        )[0, len(prompt) :].tolist()
    assert got == expected


def test_permuted_rows_make_rotate_half_rope_equal_ours():
    """Llama's RoPE (written here: rotate the halves of each head) on the permuted projection
    equals our interleaved RoPE on the original, feature for feature after the same permutation."""
    heads, d_k, seq, d_in, theta = 3, 8, 5, 12, 100.0
    weight, x = torch.randn(heads * d_k, d_in), torch.randn(seq, d_in)
    positions = torch.arange(seq)
    ours = RotaryPositionalEmbedding(theta, d_k, seq)(
        (x @ weight.T).view(seq, heads, d_k).transpose(0, 1), positions
    )

    q = (x @ interleaved_to_halves(weight, heads).T).view(seq, heads, d_k).transpose(0, 1)
    inv_freq = theta ** -(torch.arange(0, d_k, 2, dtype=torch.float64) / d_k)
    angles = torch.cat([positions[:, None] * inv_freq] * 2, dim=-1)
    half = torch.cat([-q[..., d_k // 2 :], q[..., : d_k // 2]], dim=-1)
    llama = q * angles.cos().float() + half * angles.sin().float()

    evens_then_odds = torch.cat([torch.arange(0, d_k, 2), torch.arange(1, d_k, 2)])
    torch.testing.assert_close(llama, ours[..., evens_then_odds])
    # Without the permutation the two disagree: the test above can fail.
    assert not torch.allclose(ours, (x @ weight.T).view(seq, heads, d_k).transpose(0, 1))


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_random_model_exports_to_an_equal_llama(tmp_path, tokenizer, tie):
    model = _tiny_model(seed=int(tie), tie_embeddings=tie)
    out = export_hf(model, tokenizer, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    _assert_same_model(model, out, tokenizer.encode("Once upon a time, Café 😀"))


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("data")
    (d / "train.txt").write_text(generate_corpus(30_000, seed=2) + EXTRA * 3, encoding="utf-8")
    (d / "valid.txt").write_text(generate_corpus(3_000, seed=3), encoding="utf-8")
    return {
        "data.demo_corpus": False,
        "data.train_text": str(d / "train.txt"),
        "data.val_text": str(d / "valid.txt"),
        "data.tokenizer_dir": str(d / "tok"),
        "data.train_tokens": str(d / "train.npy"),
        "data.val_tokens": str(d / "valid.npy"),
    }


def _train_tiny(tmp_path: Path, data: dict[str, object], **model) -> Path:
    overrides = {
        **data,
        "model.vocab_size": 400,
        "model.context_length": 32,
        "model.d_model": 32,
        "model.num_layers": 2,
        "model.num_heads": 4,
        "model.d_ff": 64,
        **{f"model.{k}": v for k, v in model.items()},
        "optim.lr": 1e-2,
        "schedule.warmup_iters": 2,
        "training.max_steps": 30,
        "training.batch_size": 8,
        "training.eval_interval": 30,
        "training.eval_batches": 1,
        "training.device": "cpu",
        "training.out_dir": str(tmp_path / "runs"),
        "training.run_name": "tiny",
    }
    return train(load_config(ROOT / "configs/demo.toml", overrides), progress=False).run_dir


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_trained_checkpoint_exports(tmp_path, data_overrides, tokenizer, tie):
    run_dir = _train_tiny(tmp_path, data_overrides, tie_embeddings=tie)
    out = tmp_path / "hf"
    export_checkpoint(run_dir, out)
    model, cfg = load_trained_model(run_dir, device="cpu")
    assert not torch.equal(model.ln_final.weight, torch.ones_like(model.ln_final.weight))

    ours = Tokenizer.from_dir(cfg.data.tokenizer_dir, cfg.data.special_tokens)
    prompt = ours.encode("Once upon a time, there was a")
    _assert_same_model(model, out, prompt)
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    assert [hf_tokenizer.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]

    if not tie:
        return
    # The script, as a user runs it: errors in one line, --overwrite, --dtype.
    other = tmp_path / "other_tokenizer"
    other.mkdir()
    tokenizer.save_dir(other)  # 420 ids: too many
    export = [sys.executable, str(ROOT / "script/export_hf.py"), "--checkpoint", str(run_dir)]
    for extra, message in (
        (["--out", str(out), "--tokenizer-dir", str(other)], "ids up to 419"),
        (["--out", str(out)], "not empty"),
    ):
        done = subprocess.run([*export, *extra], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*export, "--out", str(out), "--overwrite", "--dtype", "bfloat16"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    # No staging folder left behind, by the failed exports either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "other_tokenizer", "runs"]


def test_hf_tokenizer_gives_our_ids(tmp_path, tokenizer):
    model = _tiny_model(seed=0)
    out = export_hf(model, tokenizer, tmp_path / "hf")
    fast = AutoTokenizer.from_pretrained(out)
    raw = HFTokenizer.from_file(str(out / "tokenizer.json"))
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert fast.encode(text) == ids, text
        assert raw.encode(text).ids == ids, text
        assert fast.decode(ids) == text
    assert (
        fast.eos_token == "<|endoftext|>"
        and fast.eos_token_id == tokenizer.encode("<|endoftext|>")[0]
    )
    assert len(tokenizer.encode("<|endoftext|><|endoftext|>")) == 1  # the longer special wins


def test_a_pretoken_that_is_a_token_is_that_token():
    """Ranked merges turn "abc" into [a, bc] ((b, c) outranks (a, b)), but "abc" is in the
    vocab, and our encoder (like tiktoken) gives that one token; so must the export."""
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"bc", 257: b"ab", 258: b"abc"}
    ours = Tokenizer(vocab, [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c")])
    theirs = HFTokenizer.from_str(json.dumps(tokenizer_json(ours)))
    for text in ("abc", " abc xabc", "abcabc"):
        assert theirs.encode(text).ids == ours.encode(text), text
    assert ours.encode("abc xabc") == [258, 32, 120, 97, 256]


@pytest.fixture(scope="module")
def exported_tokenizer(tmp_path_factory, tokenizer) -> HFTokenizer:
    out = export_hf(_tiny_model(seed=0), tokenizer, tmp_path_factory.mktemp("hf") / "hf")
    return HFTokenizer.from_file(str(out / "tokenizer.json"))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            # Characters that Python's Unicode database knows (see export/tokenizer_json.py).
            st.text(st.characters(exclude_categories=["Cs", "Cn"]), max_size=12),
            st.sampled_from(SPECIALS + [" ", "  ", "\n", "'s", "é", "😀", "日本"]),
        ),
        max_size=8,
    )
)
def test_hf_tokenizer_gives_our_ids_on_random_text(exported_tokenizer, tokenizer, pieces):
    text = "".join(pieces)
    assert exported_tokenizer.encode(text).ids == tokenizer.encode(text)


def _config(**fields) -> ModelConfig:
    """A tiny config with `fields` set, also those ModelConfig does not have (yet): a switch
    is checked by name, so a config object that carries it stands in for the real field."""
    cfg = ModelConfig(vocab_size=300, context_length=16, d_model=32, num_layers=1, num_heads=2)
    for name, value in fields.items():
        setattr(cfg, name, value)
    return cfg


@pytest.mark.parametrize(
    "switch",
    [
        {"norm": "post"},
        {"norm": "none"},
        {"positions": "nope"},
        {"ffn": "silu"},
        {"ffn": "relu2"},
        {"qk_norm": True},
        {"logit_softcap": 30.0},
        {"value_embeddings": 2},
    ],
    ids=lambda s: "{}={}".format(*next(iter(s.items()))),
)
def test_switch_llama_cannot_express_is_named(switch):
    [(name, value)] = switch.items()
    with pytest.raises(NotExportableError, match=rf"model\.{name}={value!r}"):
        check_llama_compatible(_config(**switch))


def test_real_variant_is_refused_before_writing(tmp_path, tokenizer):
    model = TransformerLM(
        450, 16, 32, 1, 2, None, 10000.0, norm="post", positions="nope", ffn="silu"
    )
    with pytest.raises(
        NotExportableError, match="model.norm='post'.*model.positions='nope'.*model.ffn='silu'"
    ):
        export_hf(model, tokenizer, tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []


def test_init_and_kernel_switches_export_and_unknown_switches_do_not():
    check_llama_compatible(_config(zero_init_out=True, attention="sdpa", tie_embeddings=True))

    @dataclasses.dataclass
    class Later(ModelConfig):
        new_switch: bool = False

    check_llama_compatible(Later(300, 16, 32, 1, 2))
    with pytest.raises(NotExportableError, match="new_switch=True.*does not know"):
        check_llama_compatible(Later(300, 16, 32, 1, 2, new_switch=True))


def test_tokenizer_larger_than_the_model_vocab_is_refused(tmp_path, tokenizer):
    model = TransformerLM(300, 16, 32, 1, 2, None, 10000.0)
    with pytest.raises(ValueError, match="ids up to 419.*vocab_size is 300"):
        export_hf(model, tokenizer, tmp_path / "hf")
