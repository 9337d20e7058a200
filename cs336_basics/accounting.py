"""What a TransformerLM config costs: parameters, forward matmul FLOPs, AdamW training memory.

Conventions (those of the CS336 assignment-1 handout):
- A matmul of an (m x k) by a (k x n) matrix costs 2 m k n FLOPs; only matmuls are counted
  (norms, softmax, RoPE and activations are lower order). Attention scores are counted for
  the full T x T square, as the handout does, although the causal mask makes half of it moot.
- Memory is counted in values of `bytes_per_value` bytes (float32: 4). Training with AdamW
  holds the parameters, one gradient per parameter, two moments per parameter, and the
  activations saved for the backward pass; the activations are those the handout lists
  (norm outputs, q/k/v, QK^T, softmax, weighted values, output projection, FFN matmuls and
  SiLU, final norm, logits, cross-entropy over the logits).
- The model switches count as they are built: qk_norm adds two gains of d_k per layer (and
  their outputs as activations), relu2 has two FFN matrices, value embeddings add
  vocab_size x d_model + 1 parameters each (a table and its scale; a lookup, no matmul),
  logit_softcap keeps the capped logits. zero_init_out and the attention kernel change no count.

Component names follow the model's state-dict keys (`attn.q_proj`, `ffn.w1`, `ln1`, ...), so
a count can be checked against `model.named_parameters()` key by key.
"""

from dataclasses import dataclass, field

from cs336_basics.nn.transformer import ModelConfig

# GPT-2 shapes from the handout: name -> (num_layers, d_model, num_heads).
GPT2_SHAPES: dict[str, tuple[int, int, int]] = {
    "small": (12, 768, 12),
    "medium": (24, 1024, 16),
    "large": (36, 1280, 20),
    "xl": (48, 1600, 25),
}
GPT2_VOCAB_SIZE = 50_257

# FLOPs per parameter of one AdamW update (the scalar step size is computed once per step):
# m = b1*m + (1-b1)*g: 3;  v = b2*v + (1-b2)*g^2: 4;  p -= lr_t * m / (sqrt(v) + eps): 5;
# decoupled weight decay p -= lr*wd*p: 2.
ADAMW_FLOPS_PER_PARAMETER = 14


@dataclass(frozen=True)
class Tally:
    """One quantity (parameters, FLOPs or activation values) split by named component.

    `per_layer` entries occur once in each of the `num_layers` Transformer blocks; `before`
    entries once ahead of the blocks (the embeddings, value embeddings too although they
    serve only the last layers), `after` entries once behind them.
    """

    num_layers: int
    per_layer: dict[str, int]
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)

    @property
    def layer_total(self) -> int:
        """The amount in one Transformer block."""
        return sum(self.per_layer.values())

    @property
    def total(self) -> int:
        return (
            sum(self.before.values())
            + self.num_layers * self.layer_total
            + sum(self.after.values())
        )

    def components(self) -> dict[str, int]:
        """Whole-model amount of each component in model order (per-layer ones times num_layers)."""
        layers = {name: self.num_layers * n for name, n in self.per_layer.items()}
        return {**self.before, **layers, **self.after}


def _has_norms(cfg: ModelConfig) -> bool:
    return cfg.norm != "none"


def _ffn_matrices(cfg: ModelConfig) -> tuple[str, ...]:
    return ("w1", "w2", "w3") if cfg.ffn == "swiglu" else ("w1", "w2")


def parameter_count(cfg: ModelConfig) -> Tally:
    """Trainable parameters by component; a tied lm_head is counted once, under token_embeddings."""
    d, v, d_k = cfg.d_model, cfg.vocab_size, cfg.d_model // cfg.num_heads
    before = {"token_embeddings": v * d}
    if cfg.value_embeddings:
        before["value_embeddings"] = cfg.value_embeddings * v * d
        before["value_embeddings.scale"] = cfg.value_embeddings
    per_layer = {f"attn.{p}": d * d for p in ("q_proj", "k_proj", "v_proj", "output_proj")}
    if cfg.qk_norm:
        per_layer |= {"attn.q_norm": d_k, "attn.k_norm": d_k}
    per_layer |= {f"ffn.{w}": d * cfg.d_ff for w in _ffn_matrices(cfg)}
    after = {}
    if _has_norms(cfg):
        per_layer |= {"ln1": d, "ln2": d}
        after["ln_final"] = d
    if not cfg.tie_embeddings:
        after["lm_head"] = v * d
    return Tally(cfg.num_layers, per_layer, before=before, after=after)


def forward_flops(cfg: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> Tally:
    """Matmul FLOPs of one forward pass over `batch_size` sequences of `seq_len` tokens.

    `seq_len` defaults to the config's context_length. Attention scores (Q K^T) and the
    weighted sum of values each cost 2 T^2 d_model per sequence, summed over the heads.
    Of the switches only `ffn` changes the matmuls (two FFN matrices instead of three).
    """
    t = cfg.context_length if seq_len is None else seq_len
    bt, d = batch_size * t, cfg.d_model
    per_layer = {f"attn.{p}": 2 * bt * d * d for p in ("q_proj", "k_proj", "v_proj")}
    per_layer["attn.scores"] = 2 * bt * t * d
    per_layer["attn.values"] = 2 * bt * t * d
    per_layer["attn.output_proj"] = 2 * bt * d * d
    per_layer |= {f"ffn.{w}": 2 * bt * d * cfg.d_ff for w in _ffn_matrices(cfg)}
    return Tally(cfg.num_layers, per_layer, after={"lm_head": 2 * bt * d * cfg.vocab_size})


def activation_count(cfg: ModelConfig, batch_size: int, seq_len: int | None = None) -> Tally:
    """Activation values kept for the backward pass, by the handout's list of components.

    Each entry is the size of one operation's output. For SwiGLU the list also has W3's
    output and the gate product SiLU(W1 x) * W3 x that feeds W2; ffn="silu" is exactly the
    handout's W1, SiLU, W2 (relu2: W1, ReLU^2, W2). Switches add the q/k norms' outputs, each
    value embedding's looked-up rows, and the capped logits. `seq_len` defaults to the
    config's context_length.
    """
    t = cfg.context_length if seq_len is None else seq_len
    bt, d, h = batch_size * t, cfg.d_model, cfg.num_heads
    before = {"value_embeddings": cfg.value_embeddings * bt * d} if cfg.value_embeddings else {}
    per_layer = {"ln1": bt * d} if _has_norms(cfg) else {}
    per_layer |= {f"attn.{p}": bt * d for p in ("q_proj", "k_proj", "v_proj")}
    if cfg.qk_norm:
        per_layer |= {"attn.q_norm": bt * d, "attn.k_norm": bt * d}
    per_layer |= {"attn.scores": batch_size * h * t * t, "attn.softmax": batch_size * h * t * t}
    per_layer |= {"attn.values": bt * d, "attn.output_proj": bt * d}
    if _has_norms(cfg):
        per_layer["ln2"] = bt * d
    per_layer["ffn.w1"] = bt * cfg.d_ff
    if cfg.ffn == "swiglu":
        per_layer["ffn.w3"] = bt * cfg.d_ff
    per_layer["ffn.relu2" if cfg.ffn == "relu2" else "ffn.silu"] = bt * cfg.d_ff
    if cfg.ffn == "swiglu":
        per_layer["ffn.gate"] = bt * cfg.d_ff
    per_layer["ffn.w2"] = bt * d
    after = {"ln_final": bt * d} if _has_norms(cfg) else {}
    after["lm_head"] = bt * cfg.vocab_size
    if cfg.logit_softcap is not None:
        after["logit_softcap"] = bt * cfg.vocab_size
    after["cross_entropy"] = bt * cfg.vocab_size
    return Tally(cfg.num_layers, per_layer, before=before, after=after)


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes held while training with AdamW (peak, before any activation is freed)."""

    parameters: int
    gradients: int
    optimizer_state: int  # AdamW's first and second moments
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.activations


def adamw_memory(
    cfg: ModelConfig, batch_size: int, seq_len: int | None = None, bytes_per_value: int = 4
) -> TrainingMemory:
    """Training memory of `cfg` at `batch_size` sequences of `seq_len` (default context_length) tokens."""
    params = parameter_count(cfg).total * bytes_per_value
    return TrainingMemory(
        parameters=params,
        gradients=params,
        optimizer_state=2 * params,
        activations=activation_count(cfg, batch_size, seq_len).total * bytes_per_value,
    )


def max_batch_size(
    cfg: ModelConfig, memory_bytes: float, seq_len: int | None = None, bytes_per_value: int = 4
) -> int:
    """Largest batch whose AdamW training memory fits in `memory_bytes` (0 if not even one sequence).

    Activations grow linearly with the batch, everything else is fixed, so this is exact.
    """
    fixed = adamw_memory(cfg, 0, seq_len, bytes_per_value).total
    per_sequence = adamw_memory(cfg, 1, seq_len, bytes_per_value).total - fixed
    return max(0, int((memory_bytes - fixed) // per_sequence))


def adamw_step_flops(cfg: ModelConfig) -> int:
    """FLOPs of one AdamW parameter update (elementwise, ADAMW_FLOPS_PER_PARAMETER per parameter)."""
    return ADAMW_FLOPS_PER_PARAMETER * parameter_count(cfg).total


def training_step_flops(cfg: ModelConfig, batch_size: int, seq_len: int | None = None) -> int:
    """Forward + backward (twice the forward, as in Kaplan et al. 2020) + the AdamW update."""
    return 3 * forward_flops(cfg, batch_size, seq_len).total + adamw_step_flops(cfg)


def training_time_seconds(
    cfg: ModelConfig,
    steps: int,
    batch_size: int,
    peak_flops_per_second: float,
    mfu: float,
    seq_len: int | None = None,
) -> float:
    """Wall-clock time of `steps` training steps on hardware running at `mfu` of its peak."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu is a fraction of peak throughput in (0, 1]; got {mfu}")
    return steps * training_step_flops(cfg, batch_size, seq_len) / (peak_flops_per_second * mfu)


def gpt2_config(name: str, context_length: int = 1024) -> ModelConfig:
    """A GPT-2-shaped ModelConfig with the handout's choices: vocab 50,257 and d_ff = 4 d_model."""
    if name not in GPT2_SHAPES:
        raise ValueError(f"unknown GPT-2 size {name!r}; choose one of {', '.join(GPT2_SHAPES)}")
    num_layers, d_model, num_heads = GPT2_SHAPES[name]
    return ModelConfig(
        vocab_size=GPT2_VOCAB_SIZE,
        context_length=context_length,
        d_model=d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        d_ff=4 * d_model,
    )
