#!/usr/bin/env bash
# The GPU check (issue 10): CUDA tests, attention and training-step benchmarks, a 3-minute
# training run and, with two GPUs, a data-parallel run; assembled into bench/results/gpu.md.
#
#   bash bench/gpu_check.sh            # on a GPU machine, from the repo root: at most 8 minutes
#   bash bench/gpu_check.sh --dry-run  # on CPU: every step tiny, GPU-only ones skipped (~1.5 min)
#   bash bench/gpu_check.sh --only train_step,attention   # some steps again (the page then
#                                                          # holds only theirs)
#
# Every step runs under its own `timeout`: the limits add up to 465 s (60 s more for the 2-GPU
# step when two GPUs are visible), and the environment and the report take about 10 s, so one
# slow step cannot eat the others' time. A step that fails or runs out of time is recorded as
# such and the check goes on; the exit status is 0 when every step that ran succeeded.
#
# Results go to $OUT when it is set (the device machine), else to bench/results (a dry run: a
# temporary folder): gpu.md (the report), gpu_check.log (everything printed), gpu_loss_curve.png
# (the 3-minute run) and gpu_raw.tar.gz (each step's own output and the runs' metrics). Python
# is $PYTHON, else python3 (a dry run prefers .venv/bin/python); no uv is needed.
set -u
cd "$(dirname "$0")/.."

DRY=0 ONLY=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --only) ONLY=",${2:-},"; shift ;;
    *)
      echo "usage: bash bench/gpu_check.sh [--dry-run] [--only STEP,...]" >&2
      echo "  steps: tests, attention, train_step, train_run, ddp (default: all)" >&2
      exit 2
      ;;
  esac
  shift
done
PY=${PYTHON:-python3}
if [[ $DRY == 1 && -z ${PYTHON:-} && -x .venv/bin/python ]]; then PY=.venv/bin/python; fi
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [[ $DRY == 0 && $GPUS -eq 0 ]]; then  # no nvidia-smi on the PATH, perhaps: ask torch
  GPUS=$(timeout 60 "$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null)
fi
if [[ $DRY == 0 && ${GPUS:-0} -eq 0 ]]; then
  echo "no GPU visible (nvidia-smi and torch see none): nothing to measure; on a CPU, --dry-run" >&2
  exit 2
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
if [[ $DRY == 1 ]]; then DEST=${OUT:-$WORK/results}; else DEST=${OUT:-bench/results}; fi
mkdir -p "$DEST"
exec > >(tee "$DEST/gpu_check.log") 2>&1
TEE=$!
START=$SECONDS

# wanted GROUP: whether --only (if given) names this group of steps (train_step_* are
# train_step).
wanted() { [[ -z $ONLY || $ONLY == *",$1,"* ]]; }

# step NAME LIMIT_S COMMAND...: run it under `timeout`, its output also in $WORK/NAME.log, and
# record "NAME exit-status seconds limit" in $WORK/steps.tsv (exit 124: timed out).
step() {
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  if ! wanted "${name/#train_step*/train_step}"; then
    skip "$name" "not in --only"
    return
  fi
  echo
  echo "=== [$((SECONDS - START))s] $name (limit ${limit}s): $*"
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$WORK/steps.tsv"
  echo "=== $name: exit $rc after $((SECONDS - start))s"
}
skip() {  # skip NAME REASON
  echo
  echo "=== $1: skipped ($2)"
  printf '%s\tskipped: %s\t0\t0\n' "$1" "$2" >>"$WORK/steps.tsv"
}

# (1) environment
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "mode: $([[ $DRY == 1 ]] && echo 'dry run on CPU' || echo 'GPU check')"
  echo "gpus: $GPUS"
  timeout 10 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null |
    head -n 1 | sed 's/^/driver: /'
  timeout 60 "$PY" -c 'import platform, torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
print(f"python: {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda})")
try:
    import triton
    print(f"triton: {triton.__version__}")
except ImportError:
    print("triton: not installed")
import os; print(f"cpus: {os.cpu_count()}")'
} | tee "$WORK/env.txt"

# The 3-minute run's data: generated stories, a BPE tokenizer and token arrays, built on the
# CPU while the tests run (a few seconds; the machine has no network and no data). The
# generated text's small vocabulary supports only about 1,070 BPE ids, so the tokenizer has
# 1,024, not TinyStories' 10,000.
DATA=$WORK/data
if [[ $DRY == 1 ]]; then CORPUS=1000000; else CORPUS=30000000; fi
RUN_DATA=(
  --data.demo_corpus true --data.demo_corpus_bytes "$CORPUS"
  --data.train_text "$DATA/train.txt" --data.val_text "$DATA/valid.txt"
  --data.tokenizer_dir "$DATA/tokenizer"
  --data.train_tokens "$DATA/train.npy" --data.val_tokens "$DATA/valid.npy"
  --model.vocab_size 1024 --training.out_dir "$WORK/runs" --training.overwrite true
)
prepare_data() {
  "$PY" -c 'import sys
from cs336_basics.config import load_config
from cs336_basics.training.prepare import prepare_data
import numpy as np
cfg = load_config("configs/tinystories.toml", sys.argv[1:])
prepare_data(cfg.data, cfg.model.vocab_size, progress=False)
train, valid = (np.load(p, mmap_mode="r") for p in (cfg.data.train_tokens, cfg.data.val_tokens))
print(f"{len(train):,} training and {len(valid):,} validation tokens")' "${RUN_DATA[@]}" \
    >"$WORK/data.log" 2>&1
}
prepare_data &
PREPARE=$!

# (2) CUDA tests: the Triton kernel, attention numerics, the attention dispatch, and a bad device
step tests 55 "$PY" -m pytest -x -p no:cacheprovider \
  tests/test_flash_attention.py tests/test_attention_numerics.py \
  tests/test_model.py::test_attention_dispatch_to_the_triton_module \
  tests/test_model.py::test_auto_attention_is_scratch_on_cpu \
  tests/test_data.py::test_get_batch
wait "$PREPARE"
echo "data for the training runs: exit $? ($(tail -n 1 "$WORK/data.log"))"

# (3) attention kernel against SDPA at T = 256, 1024, 4096
if [[ $DRY == 1 ]]; then
  step attention 40 env TRITON_INTERPRET=1 "$PY" bench/bench_attention.py --smoke
else
  step attention 40 "$PY" bench/bench_attention.py --out "$WORK/attention.md"
fi

# (4) training step, ours (each attention) vs the torch built-ins reference, compiled and eager
if [[ $DRY == 1 ]]; then
  step train_step_tiny 60 env TRITON_INTERPRET=1 "$PY" bench/bench_train_step.py --shape tiny \
    --batch-size 2 --attention scratch,triton,sdpa --modes eager --steps 2 --warmup 1 \
    --jsonl "$WORK/train_step.jsonl" --out "$WORK/train_step_tiny.md"
  step train_step_tiny_compiled 90 "$PY" bench/bench_train_step.py --shape tiny \
    --batch-size 2 --attention scratch --modes compile --steps 2 --warmup 1 \
    --jsonl "$WORK/train_step.jsonl" --out "$WORK/train_step_tiny_compiled.md"
  skip train_step_gpt2-small "GPU only"
else
  step train_step_tinystories 65 "$PY" bench/bench_train_step.py --shape tinystories \
    --steps 10 --warmup 2 --jsonl "$WORK/train_step.jsonl" --out "$WORK/train_step_tinystories.md"
  step train_step_gpt2-small 110 "$PY" bench/bench_train_step.py --shape gpt2-small \
    --steps 5 --warmup 2 --jsonl "$WORK/train_step.jsonl" --out "$WORK/train_step_gpt2-small.md"
fi

# (5) 3 minutes of training at the TinyStories shape (batch 128 x 256, bf16, compiled)
RUN=(script/train.py --config configs/tinystories.toml "${RUN_DATA[@]}" --samples 1
  --sample-tokens 120 --training.run_name tinystories_3min --training.checkpoint_interval 100000)
if [[ $DRY == 1 ]]; then
  step train_run 60 "$PY" "${RUN[@]}" --training.device cpu --training.time_budget_s 15 \
    --model.context_length 64 --model.d_model 64 --model.num_layers 2 --model.num_heads 4 \
    --model.d_ff 192 --training.batch_size 8 --training.eval_interval 20 \
    --training.eval_batches 2 --training.log_interval 5
else
  step train_run 195 "$PY" "${RUN[@]}" --training.compile true --training.time_budget_s 180
fi

# (6) data-parallel training on two GPUs (a dry run: two gloo ranks on the CPU)
DDP=(-m torch.distributed.run --standalone --nproc_per_node 2 script/train.py
  --config configs/tinystories.toml "${RUN_DATA[@]}" --samples 0 --training.run_name ddp_2gpu
  --training.max_steps 40 --training.eval_interval 20 --training.eval_batches 4
  --training.log_interval 10 --training.checkpoint_interval 100000)
if [[ $DRY == 1 ]]; then
  step ddp 60 "$PY" "${DDP[@]}" --training.device cpu --training.max_steps 6 \
    --model.context_length 64 --model.d_model 64 --model.num_layers 2 --model.num_heads 4 \
    --model.d_ff 192 --training.batch_size 8 --training.eval_interval 3 --training.log_interval 3
elif [[ $GPUS -ge 2 ]]; then
  step ddp 60 "$PY" "${DDP[@]}"
else
  skip ddp "$GPUS GPU visible; needs 2"
fi

# (7) the report
echo
echo "=== [$((SECONDS - START))s] report"
cp "$WORK/runs/tinystories_3min/loss_curve.png" "$DEST/gpu_loss_curve.png" 2>/dev/null
tar -czf "$DEST/gpu_raw.tar.gz" -C "$WORK" --exclude ./data --exclude ./results --exclude '*.pt' .
timeout 60 "$PY" bench/gpu_report.py --work "$WORK" --out "$DEST/gpu.md" \
  $([[ $DRY == 1 ]] && echo --dry-run)
FAILED=$(cut -f 2 "$WORK/steps.tsv" | grep -cv '^0$\|^skipped')
echo "=== done in $((SECONDS - START))s, $FAILED step(s) failed or ran out of time: $DEST/gpu.md"
exec >&- 2>&-
wait "$TEE"  # the log is complete when the script returns
[[ $FAILED == 0 ]]
