"""HellaSwag scoring against a naive one-sequence-at-a-time reference, and evaluate.py --help."""

import json
import runpy
import sys

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.hellaswag import Example, join_ending, load_examples, score_examples
from cs336_basics.nn.transformer import TransformerLM


def byte_encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


EXAMPLES = [
    Example("A cat sat on the", ["mat.", "moon and sang all night long.", " hat", "dog"], 0),
    Example("He opened the door and", ["walked in.", "flew.", "ate the door.", "x"], 1),
    Example("x" * 40, ["y" * 30, "z", "zz", "w" * 3], 3),  # longer than the model's context
]


class FavourToken(torch.nn.Module):
    """A 'model' whose logits put +5 on one token at every position, whatever the input."""

    def __init__(self, token: int, vocab: int = 256):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            self.bias[token] = 5.0

    def forward(self, ids):
        return self.bias.expand(*ids.shape, -1)


def naive_loss_sum(model, context: str, ending: str, context_length: int) -> float:
    ctx, end = byte_encode(context), byte_encode(join_ending(ending))
    ids = torch.tensor(ctx + end)
    for _ in range(max(0, len(ids) - (context_length + 1))):
        ids = ids[1:]  # drop the oldest token until input + target fit
    n_end = min(len(end), len(ids) - 1)
    logp = F.log_softmax(model(ids[None, :-1]).float(), dim=-1)[0]
    nll = -logp[torch.arange(len(ids) - 1), ids[1:]]
    return nll[-n_end:].sum().item()


def test_batched_scores_match_naive_loop():
    torch.manual_seed(0)
    context_length = 24
    model = TransformerLM(256, context_length, 32, 2, 4, 64, 10000.0).eval()
    scores = score_examples(
        model, byte_encode, EXAMPLES, context_length, batch_size=5, progress=False
    )
    expected = torch.tensor(
        [
            [naive_loss_sum(model, ex.context, e, context_length) for e in ex.endings]
            for ex in EXAMPLES
        ]
    )
    torch.testing.assert_close(scores.loss_sum, expected, rtol=1e-4, atol=1e-4)
    assert scores.num_tokens[2].tolist() == [24, 2, 3, 4]  # the long ending is cut to the context
    assert scores.num_bytes[0].tolist() == [5, 30, 4, 4]


def test_accuracy_follows_the_favoured_token():
    examples = [
        Example("ctx", ["aaaa", "bbbb", "abab"], 0),
        Example("ctx", ["bbbb", "aaaa", "abab"], 1),
        Example("ctx", ["bb", "bbbb", "aaaaaaaa"], 2),
        Example("ctx", ["aa", "bb", "cc"], 1),  # wrong label: the model picks "aa"
    ]
    scores = score_examples(FavourToken(ord("a")), byte_encode, examples, 64, progress=False)
    assert scores.accuracy() == pytest.approx(0.75)
    assert scores.accuracy_per_byte() == pytest.approx(0.75)


def test_per_token_and_per_byte_rankings_can_disagree():
    def encode(text: str) -> list[int]:  # 'é' (2 UTF-8 bytes) is one token, id 233
        return [ord(ch) for ch in text]

    # Favoured 'a' costs ~1.0 nats, any other token ~6.0. " éé": 3 tokens, 5 bytes, 18 nats
    # -> 6.0/token, 3.6/byte. " ab": 3 tokens, 3 bytes, 13 nats -> 4.3/token and /byte.
    examples = [Example("c", ["éé", "ab"], 0)]
    scores = score_examples(FavourToken(ord("a")), encode, examples, 64, progress=False)
    assert scores.num_tokens[0].tolist() == [3, 3] and scores.num_bytes[0].tolist() == [5, 3]
    assert scores.accuracy() == 0.0
    assert scores.accuracy_per_byte() == 1.0


def test_load_examples_accepts_both_formats(tmp_path):
    orig = tmp_path / "hs.jsonl"
    olmes = tmp_path / "olmes.jsonl"
    orig.write_text(
        "\n".join(
            json.dumps({"ctx": ex.context, "endings": ex.endings, "label": ex.label, "ind": i})
            for i, ex in enumerate(EXAMPLES)
        )
        + "\n"
    )
    olmes.write_text(
        "\n".join(
            json.dumps({"query": ex.context, "choices": ex.endings, "gold": ex.label})
            for ex in EXAMPLES
        )
    )
    assert load_examples(orig) == EXAMPLES == load_examples(olmes)
    assert load_examples(orig, limit=2) == EXAMPLES[:2]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "x"}', "ctx/endings/label"),
        ('{"ctx": "c", "endings": ["a", "b"], "label": 2}', "label"),
        ("not json", ":1:"),
    ],
)
def test_load_examples_rejects_bad_lines(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        load_examples(path)


def test_evaluate_script_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["script/evaluate.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path("script/evaluate.py", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--hellaswag" in out and "--tokens" in out
