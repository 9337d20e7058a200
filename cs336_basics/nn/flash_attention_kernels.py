"""Triton kernels of the causal FlashAttention-2 in `flash_attention.py`, and their launchers.

Imported only when Triton is (it does not exist on every platform). Tensors are 4-D
`(batch, heads, seq, head_dim)` with unit stride along head_dim; any other strides are passed
to the kernels, so the model's permuted q/k/v views and KV-cache slices need no copy.

Scores are kept in base 2: `qk_scale` folds log2(e) into 1/sqrt(d), so every softmax
exponential is one `exp2`, and the saved logsumexp is `log2(sum_j 2^(s_ij - m_i)) + m_i` in
those units. Statistics and accumulators are float32; the probabilities are rounded to the
input dtype only as an operand of the P @ V (and dS @ K, dS^T @ Q) products, as FlashAttention
does.

Causal layout: query i (0-based among `num_q`) sees keys 0 .. i + (num_k - num_q). Every loop
over key (or query) blocks is split into blocks that the mask leaves whole, which run without
any masking, and the few blocks across the diagonal or past the end, which are masked.
"""

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# Two fixes for Triton's interpreter, so that it computes what the GPU does: it multiplies bf16
# operands of tl.dot as their raw bits (triton-lang/triton#11584), and it truncates float32 to
# bf16 where the GPU rounds to nearest even.
_INTERPRETED = tl.constexpr(INTERPRETED)
# The interpreter re-patches triton.language at every call of a jit function (~1 ms): there,
# the kernels' helpers are plain functions, called as such (tests run 2-3x faster).
_helper = (lambda fn: fn) if INTERPRETED else triton.jit
# Lengths vary (decoding adds a key per call): no recompiling for their divisibility by 16.
_kernel = triton.jit(do_not_specialize=["num_q", "num_k", "q_bucket", "k_bucket"])
LOG2_E = math.log2(math.e)


def _tuned(kernel, blocks: list[tuple[int, int, int, int]], interpreted: tuple[int, int]):
    """`kernel` autotuned over `blocks` (BLOCK_M, BLOCK_N, num_warps, num_stages), per head
    size, dtype and power-of-two bucket of the lengths (so that decoding, one more key per call,
    does not re-tune every step), with short timing runs: tuning time counts wherever the kernel
    first runs. Interpreted: the one small tile `interpreted`, so the autotuner never times."""
    if INTERPRETED:
        configs = [triton.Config({"BLOCK_M": interpreted[0], "BLOCK_N": interpreted[1]})]
    else:
        configs = [
            triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in blocks
        ]
    return triton.autotune(
        configs=configs,
        key=["HEAD_DIM", "q_bucket", "k_bucket"],
        do_bench=lambda fn, quantiles: triton.testing.do_bench(
            fn, warmup=5, rep=20, quantiles=quantiles
        ),
    )(kernel)


@_helper
def _load(ptrs, rows_ok, cols_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """tl.load with only the masks a tile needs (none inside the causal region's whole blocks)."""
    if MASK_ROWS and MASK_COLS:
        return tl.load(ptrs, mask=rows_ok & cols_ok, other=0.0)
    elif MASK_ROWS:
        return tl.load(ptrs, mask=rows_ok, other=0.0)
    elif MASK_COLS:
        return tl.load(ptrs, mask=cols_ok, other=0.0)
    else:
        return tl.load(ptrs)


@_helper
def _dot(a, b, acc, PRECISION: tl.constexpr):
    """acc + a @ b, accumulated in float32 (acc None: from zero)."""
    if _INTERPRETED:  # float32 copies: exact for every input dtype
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@_helper
def _cast(x, dtype: tl.constexpr):
    """x.to(dtype), rounded to nearest even."""
    if _INTERPRETED:
        if dtype == tl.bfloat16:  # round the float32 bits so that truncating them is exact
            bits = x.to(tl.uint32, bitcast=True)
            x = (bits + 0x7FFF + ((bits >> 16) & 1)).to(tl.float32, bitcast=True)
    return x.to(dtype)


@_helper
def _forward_blocks(
    acc,
    m_i,
    l_i,
    q,
    K,
    V,
    stride_kt,
    stride_vt,
    rows,
    offs_d,
    start,
    stop,
    num_k,
    offset,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Online softmax over key blocks start, start + BLOCK_N, ... < stop."""
    d_ok = offs_d < HEAD_DIM
    for start_n in range(start, stop, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        key_ok = keys < num_k
        kt = _load(
            K + keys[None, :] * stride_kt + offs_d[:, None],
            key_ok[None, :],
            d_ok[:, None],
            MASK,
            BLOCK_D != HEAD_DIM,
        )
        s = _dot(q, kt, None, PRECISION) * qk_scale
        if MASK:
            s = tl.where(keys[None, :] <= rows[:, None] + offset, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load(
            V + keys[:, None] * stride_vt + offs_d[None, :],
            key_ok[:, None],
            d_ok[None, :],
            MASK,
            BLOCK_D != HEAD_DIM,
        )
        acc = _dot(_cast(p, v.dtype), v, acc * alpha[:, None], PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@_kernel
def _forward_kernel(
    Q,
    K,
    V,
    Out,
    LSE,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_ob,
    stride_oh,
    stride_ot,
    num_q,
    num_k,
    qk_scale,
    q_bucket,
    k_bucket,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One program per (query block, head, batch): out and base-2 logsumexp of its rows."""
    # The last query blocks see the most keys: start them first, so the grid's tail is short.
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    head, batch = tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    Q += batch * stride_qb + head * stride_qh
    K += batch * stride_kb + head * stride_kh
    V += batch * stride_vb + head * stride_vh
    Out += batch * stride_ob + head * stride_oh
    LSE += (batch * tl.num_programs(1) + head) * num_q

    rows = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < num_q
    d_ok = offs_d < HEAD_DIM
    q = _load(
        Q + rows[:, None] * stride_qt + offs_d[None, :],
        row_ok[:, None],
        d_ok[None, :],
        True,
        BLOCK_D != HEAD_DIM,
    )
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    offset = num_k - num_q
    # Keys 0 .. start_m + offset are seen by every row of the block; later ones by some rows.
    whole = (start_m + offset + 1) // BLOCK_N * BLOCK_N
    stop = tl.minimum(start_m + BLOCK_M + offset, num_k)
    acc, m_i, l_i = _forward_blocks(
        acc, m_i, l_i, q, K, V, stride_kt, stride_vt, rows, offs_d, 0, whole, num_k, offset,
        qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False, PRECISION,
    )  # fmt: skip
    acc, m_i, l_i = _forward_blocks(
        acc, m_i, l_i, q, K, V, stride_kt, stride_vt, rows, offs_d, whole, stop, num_k, offset,
        qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True, PRECISION,
    )  # fmt: skip

    tl.store(LSE + rows, m_i + tl.math.log2(l_i), mask=row_ok)
    out = acc / l_i[:, None]
    tl.store(
        Out + rows[:, None] * stride_ot + offs_d[None, :],
        _cast(out, Out.dtype.element_ty),
        mask=row_ok[:, None] & d_ok[None, :],
    )


@_helper
def _dq_blocks(
    dq,
    q,
    do,
    lse,
    delta,
    K,
    V,
    stride_kt,
    stride_vt,
    rows,
    offs_d,
    start,
    stop,
    num_k,
    offset,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dq += dS @ K over key blocks start, start + BLOCK_N, ... < stop (dS unscaled)."""
    d_ok = offs_d < HEAD_DIM
    for start_n in range(start, stop, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        key_ok = keys < num_k
        kt = _load(
            K + keys[None, :] * stride_kt + offs_d[:, None],
            key_ok[None, :],
            d_ok[:, None],
            MASK,
            BLOCK_D != HEAD_DIM,
        )
        vt = _load(
            V + keys[None, :] * stride_vt + offs_d[:, None],
            key_ok[None, :],
            d_ok[:, None],
            MASK,
            BLOCK_D != HEAD_DIM,
        )
        p = tl.math.exp2(_dot(q, kt, None, PRECISION) * qk_scale - lse[:, None])
        if MASK:
            p = tl.where(keys[None, :] <= rows[:, None] + offset, p, 0.0)
        dp = _dot(do, vt, None, PRECISION)
        ds = p * (dp - delta[:, None])
        dq = _dot(_cast(ds, kt.dtype), tl.trans(kt), dq, PRECISION)
    return dq


@_kernel
def _backward_dq_kernel(
    Q,
    K,
    V,
    Out,
    dOut,
    LSE,
    Delta,
    dQ,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_ob,
    stride_oh,
    stride_ot,
    stride_dob,
    stride_doh,
    stride_dot,
    stride_dqb,
    stride_dqh,
    stride_dqt,
    num_q,
    num_k,
    qk_scale,
    sm_scale,
    q_bucket,
    k_bucket,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One program per (query block, head, batch): delta = rowsum(dO * O), saved for the dk/dv
    kernel that runs next, then dq = sm_scale * sum_j dS_ij k_j."""
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    head, batch = tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    Q += batch * stride_qb + head * stride_qh
    K += batch * stride_kb + head * stride_kh
    V += batch * stride_vb + head * stride_vh
    Out += batch * stride_ob + head * stride_oh
    dOut += batch * stride_dob + head * stride_doh
    dQ += batch * stride_dqb + head * stride_dqh
    LSE += (batch * tl.num_programs(1) + head) * num_q
    Delta += (batch * tl.num_programs(1) + head) * num_q

    rows = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < num_q
    d_ok = offs_d < HEAD_DIM
    q = _load(
        Q + rows[:, None] * stride_qt + offs_d[None, :],
        row_ok[:, None],
        d_ok[None, :],
        True,
        BLOCK_D != HEAD_DIM,
    )
    do = _load(
        dOut + rows[:, None] * stride_dot + offs_d[None, :],
        row_ok[:, None],
        d_ok[None, :],
        True,
        BLOCK_D != HEAD_DIM,
    )
    out = _load(
        Out + rows[:, None] * stride_ot + offs_d[None, :],
        row_ok[:, None],
        d_ok[None, :],
        True,
        BLOCK_D != HEAD_DIM,
    )
    # Softmax backward: dS = P * (dP - delta) with delta_i = sum_j P_ij dP_ij = dO_i . O_i.
    delta = tl.sum(do.to(tl.float32) * out.to(tl.float32), 1)
    tl.store(Delta + rows, delta, mask=row_ok)
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    offset = num_k - num_q
    whole = (start_m + offset + 1) // BLOCK_N * BLOCK_N
    stop = tl.minimum(start_m + BLOCK_M + offset, num_k)
    dq = _dq_blocks(
        dq, q, do, lse, delta, K, V, stride_kt, stride_vt, rows, offs_d, 0, whole, num_k,
        offset, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False, PRECISION,
    )  # fmt: skip
    dq = _dq_blocks(
        dq, q, do, lse, delta, K, V, stride_kt, stride_vt, rows, offs_d, whole, stop, num_k,
        offset, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True, PRECISION,
    )  # fmt: skip
    tl.store(
        dQ + rows[:, None] * stride_dqt + offs_d[None, :],
        _cast(dq * sm_scale, dQ.dtype.element_ty),
        mask=row_ok[:, None] & d_ok[None, :],
    )


@_helper
def _dkdv_blocks(
    dk,
    dv,
    k,
    v,
    Q,
    dOut,
    LSE,
    Delta,
    stride_qt,
    stride_dot,
    keys,
    offs_d,
    start,
    stop,
    num_q,
    offset,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dv += P^T @ dO and dk += dS^T @ Q over query blocks start, start + BLOCK_M, ... < stop,
    with everything transposed (keys along rows) so that the key block is the dots' M side."""
    d_ok = offs_d < HEAD_DIM
    for start_m in range(start, stop, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_ok = rows < num_q
        q = _load(
            Q + rows[:, None] * stride_qt + offs_d[None, :],
            row_ok[:, None],
            d_ok[None, :],
            MASK,
            BLOCK_D != HEAD_DIM,
        )
        do = _load(
            dOut + rows[:, None] * stride_dot + offs_d[None, :],
            row_ok[:, None],
            d_ok[None, :],
            MASK,
            BLOCK_D != HEAD_DIM,
        )
        if MASK:
            lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
            delta = tl.load(Delta + rows, mask=row_ok, other=0.0)
        else:
            lse = tl.load(LSE + rows)
            delta = tl.load(Delta + rows)
        pt = tl.math.exp2(_dot(k, tl.trans(q), None, PRECISION) * qk_scale - lse[None, :])
        if MASK:
            pt = tl.where((keys[:, None] <= rows[None, :] + offset) & row_ok[None, :], pt, 0.0)
        dv = _dot(_cast(pt, do.dtype), do, dv, PRECISION)
        dpt = _dot(v, tl.trans(do), None, PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk = _dot(_cast(dst, q.dtype), q, dk, PRECISION)
    return dk, dv


@_kernel
def _backward_dkdv_kernel(
    Q,
    K,
    V,
    dOut,
    LSE,
    Delta,
    dK,
    dV,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_dob,
    stride_doh,
    stride_dot,
    stride_dkb,
    stride_dkh,
    stride_dkt,
    stride_dvb,
    stride_dvh,
    stride_dvt,
    num_q,
    num_k,
    qk_scale,
    sm_scale,
    q_bucket,
    k_bucket,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One program per (key block, head, batch): its dk and dv, summed over the queries that
    see it, in registers (no atomics)."""
    start_n = tl.program_id(0) * BLOCK_N  # the first key blocks are seen most: they go first
    head, batch = tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    Q += batch * stride_qb + head * stride_qh
    K += batch * stride_kb + head * stride_kh
    V += batch * stride_vb + head * stride_vh
    dOut += batch * stride_dob + head * stride_doh
    dK += batch * stride_dkb + head * stride_dkh
    dV += batch * stride_dvb + head * stride_dvh
    LSE += (batch * tl.num_programs(1) + head) * num_q
    Delta += (batch * tl.num_programs(1) + head) * num_q

    keys = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    key_ok = keys < num_k
    d_ok = offs_d < HEAD_DIM
    k = _load(
        K + keys[:, None] * stride_kt + offs_d[None, :],
        key_ok[:, None],
        d_ok[None, :],
        True,
        BLOCK_D != HEAD_DIM,
    )
    v = _load(
        V + keys[:, None] * stride_vt + offs_d[None, :],
        key_ok[:, None],
        d_ok[None, :],
        True,
        BLOCK_D != HEAD_DIM,
    )
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    offset = num_k - num_q
    # Queries from start_n - offset on see some of these keys, from start_n + BLOCK_N - 1 -
    # offset on all of them; the last block, cut by num_q, is masked too.
    first = tl.maximum(start_n - offset, 0) // BLOCK_M * BLOCK_M
    whole = (tl.maximum(start_n + BLOCK_N - 1 - offset, 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    full = num_q // BLOCK_M * BLOCK_M
    dk, dv = _dkdv_blocks(
        dk, dv, k, v, Q, dOut, LSE, Delta, stride_qt, stride_dot, keys, offs_d, first,
        tl.minimum(whole, num_q), num_q, offset, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M, True,
        PRECISION,
    )  # fmt: skip
    dk, dv = _dkdv_blocks(
        dk, dv, k, v, Q, dOut, LSE, Delta, stride_qt, stride_dot, keys, offs_d, whole, full,
        num_q, offset, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M, False, PRECISION,
    )  # fmt: skip
    dk, dv = _dkdv_blocks(
        dk, dv, k, v, Q, dOut, LSE, Delta, stride_qt, stride_dot, keys, offs_d,
        tl.maximum(whole, full), num_q, num_q, offset, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M,
        True, PRECISION,
    )  # fmt: skip
    mask = key_ok[:, None] & d_ok[None, :]
    tl.store(
        dK + keys[:, None] * stride_dkt + offs_d[None, :],
        _cast(dk * sm_scale, dK.dtype.element_ty),
        mask=mask,
    )
    tl.store(
        dV + keys[:, None] * stride_dvt + offs_d[None, :], _cast(dv, dV.dtype.element_ty), mask=mask
    )


# (BLOCK_M, BLOCK_N, num_warps, num_stages). The forward and dq kernels hold a query block
# and stream keys; the dk/dv kernel holds a key block (BLOCK_N) and streams queries (BLOCK_M).
# Interpreted tiles are as unequal as the GPU's, to test the same block arithmetic.
_forward = _tuned(
    _forward_kernel,
    [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3)],
    interpreted=(32, 16),
)
_backward_dq = _tuned(
    _backward_dq_kernel,
    [(128, 32, 4, 4), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 4)],
    interpreted=(32, 16),
)
_backward_dkdv = _tuned(
    _backward_dkdv_kernel,
    [(32, 128, 4, 4), (64, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 4)],
    interpreted=(16, 32),
)


def _shape_args(q: Tensor, k: Tensor) -> dict:
    """Kernel arguments common to the three kernels."""
    num_q, num_k, head_dim = q.shape[-2], k.shape[-2], q.shape[-1]
    sm_scale = head_dim**-0.5
    # float32 products as torch.matmul's precision setting asks: TF32, or float32 accuracy from
    # three TF32 products (tensor cores still; plain float32 FMAs spill and crawl).
    fp32_precision = "tf32" if torch.get_float32_matmul_precision() != "highest" else "tf32x3"
    return {
        "num_q": num_q,
        "num_k": num_k,
        "qk_scale": sm_scale * LOG2_E,
        "q_bucket": triton.next_power_of_2(num_q),
        "k_bucket": triton.next_power_of_2(num_k),
        "HEAD_DIM": head_dim,
        "BLOCK_D": max(16, triton.next_power_of_2(head_dim)),
        "PRECISION": fp32_precision if q.dtype == torch.float32 else "tf32",
    }


def _grid(blocks_along: int, q: Tensor, block: str):
    batch, heads = q.shape[0], q.shape[1]
    return lambda meta: (triton.cdiv(blocks_along, meta[block]), heads, batch)


def forward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(out, base-2 logsumexp of each query row, float32 (batch, heads, num_q))."""
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    if q.numel():
        _forward[_grid(q.shape[-2], q, "BLOCK_M")](
            q, k, v, out, lse, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
            *out.stride()[:3], **_shape_args(q, k),
        )  # fmt: skip
    return out, lse


def backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) from the forward's out and logsumexp; probabilities are recomputed."""
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    delta = torch.empty_like(lse)
    args = _shape_args(q, k)
    sm_scale = q.shape[-1] ** -0.5
    if q.numel():  # the dq kernel also writes delta, which the dk/dv kernel reads
        _backward_dq[_grid(q.shape[-2], q, "BLOCK_M")](
            q, k, v, out, grad_out, lse, delta, dq, *q.stride()[:3], *k.stride()[:3],
            *v.stride()[:3], *out.stride()[:3], *grad_out.stride()[:3], *dq.stride()[:3],
            sm_scale=sm_scale, **args,
        )  # fmt: skip
    if k.numel():
        _backward_dkdv[_grid(k.shape[-2], q, "BLOCK_N")](
            q, k, v, grad_out, lse, delta, dk, dv, *q.stride()[:3], *k.stride()[:3],
            *v.stride()[:3], *grad_out.stride()[:3], *dk.stride()[:3], *dv.stride()[:3],
            sm_scale=sm_scale, **args,
        )  # fmt: skip
    return dq, dk, dv
