"""Sampling from a TransformerLM: temperature, top-k, top-p (nucleus), stop token, KV cache.

Each new token costs one position: the prompt is encoded once into a KV cache, then every
step feeds only the token just sampled.

Longer than the context: the model sees at most `context_length` tokens, so a longer prompt
keeps only its last `context_length` tokens. When the cache is full and generation goes on,
the window slides: the newest `context_length // 2` tokens are re-encoded into a fresh cache
and decoding continues from there. The logits are then exactly those of the uncached model
run on that window (RoPE attention depends only on relative positions), and the re-encoding
costs half a window once every `context_length // 2` new tokens.
"""

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cs336_basics.nn.functional import softmax
from cs336_basics.nn.transformer import TransformerLM


def top_k_filter(logits: Float[Tensor, "... vocab"], k: int) -> Float[Tensor, "... vocab"]:
    """Keep the `k` largest logits of each row (exactly k, ties broken by topk) and set the rest to -inf."""
    if k >= logits.shape[-1]:
        return logits
    top = logits.topk(k, dim=-1)
    return torch.full_like(logits, -math.inf).scatter(-1, top.indices, top.values)


def top_p_filter(logits: Float[Tensor, "... vocab"], p: float) -> Float[Tensor, "... vocab"]:
    """Nucleus filter: keep the smallest set of most probable tokens whose probability sums to >= p.

    A token is kept when the probability of the tokens ranked above it is still below p, so the
    most probable token always survives. Dropped logits become -inf.
    """
    if p >= 1:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = softmax(sorted_logits.float(), dim=-1)
    drop_sorted = probs.cumsum(-1) - probs >= p
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def sample_next(
    logits: Float[Tensor, "batch vocab"],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, " batch"]:
    """One token id per row: argmax when temperature is 0, else a draw from the filtered softmax."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float()
    # Subtracting the max first keeps logits / temperature finite for any tiny temperature.
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = softmax(logits, dim=-1)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


def _check_sampling(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 = greedy); got {temperature}"
        )
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no top-k filter); got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (or None for no nucleus filter); got {top_p}")


@torch.inference_mode()
def generate_samples(
    model: TransformerLM,
    prompt_ids: list[int],
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """`num_samples` continuations of one prompt, decoded together as one batch.

    Each continuation holds up to `max_new_tokens` new ids and ends early right after `stop_id`
    (which is included, so a caller can tell a stop from running out of tokens).
    """
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    if not prompt_ids:
        raise ValueError("prompt_ids is empty; give at least one token (e.g. the <|endoftext|> id)")
    model.check_token_ids(prompt_ids, "prompt_ids")  # the model's forward does not check them
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")
    if max_new_tokens == 0:
        return [[] for _ in range(num_samples)]
    context = model.config.context_length
    keep = max(1, context // 2)
    device = next(model.parameters()).device
    prompt = torch.tensor(prompt_ids[-context:], device=device).expand(num_samples, -1)
    cache = model.make_kv_cache(num_samples)
    logits = model(prompt, kv_cache=cache)[:, -1]
    new: list[Tensor] = []
    stopped = torch.zeros(num_samples, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        token = sample_next(logits, temperature, top_k, top_p, generator)
        new.append(token)
        if stop_id is not None:
            stopped |= token == stop_id
            if bool(stopped.all()):
                break
        if step + 1 == max_new_tokens:
            break
        if cache.length == context:  # full: slide the window (see the module docstring)
            recent = torch.cat([prompt, torch.stack(new, dim=1)], dim=1)[:, -keep:]
            cache = model.make_kv_cache(num_samples)
            logits = model(recent, kv_cache=cache)[:, -1]
        else:
            logits = model(token[:, None], kv_cache=cache)[:, -1]
    samples = torch.stack(new, dim=1).tolist()
    if stop_id is not None:
        samples = [s[: s.index(stop_id) + 1] if stop_id in s else s for s in samples]
    return samples


def generate(
    model: TransformerLM,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """New token ids continuing `prompt_ids` (stop_id included if it was sampled); see generate_samples."""
    return generate_samples(
        model, prompt_ids, 1, max_new_tokens, temperature, top_k, top_p, stop_id, generator
    )[0]


def generate_text(
    model: TransformerLM,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token: str | None = "<|endoftext|>",
    num_samples: int = 1,
    seed: int | None = None,
) -> list[str]:
    """`num_samples` completions of `prompt` (the new text only, without the stop token).

    `tokenizer` needs `encode(str) -> list[int]` and `decode(list[int]) -> str`; `stop_token`
    must be one of its special tokens (None: stop only at max_new_tokens). An empty prompt
    starts from the stop token, as a fresh document does in training data. `seed` makes the
    samples reproducible; None draws a fresh seed.
    """
    stop_id = None
    if stop_token is not None:
        stop_ids = tokenizer.encode(stop_token)
        if len(stop_ids) != 1:
            raise ValueError(
                f"stop token {stop_token!r} is not a single token of this tokenizer (it encodes to {stop_ids}); "
                "build the tokenizer with it as a special token, or pass stop_token=None"
            )
        stop_id = stop_ids[0]
    prompt_ids = tokenizer.encode(prompt)
    if not prompt_ids:
        if stop_id is None:
            raise ValueError(
                "the prompt is empty and there is no stop token to start from; give a prompt"
            )
        prompt_ids = [stop_id]
    generator = torch.Generator(device=next(model.parameters()).device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    samples = generate_samples(
        model,
        prompt_ids,
        num_samples,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        stop_id,
        generator,
    )
    return [tokenizer.decode(s[:-1] if s and s[-1] == stop_id else s) for s in samples]
