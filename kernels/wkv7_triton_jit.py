"""The Triton kernels behind kernels/wkv7_triton.py (which explains the algorithm).

A module of its own so that it is imported only when the op first runs: triton reads
TRITON_INTERPRET when these functions are decorated, and its interpreter patches `tl`
in this module's globals.
"""

import triton
import triton.language as tl


@triton.jit
def load_step(w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, offset, cols, rows):
    """One step's key-side vectors (over cols) and value slice (over this program's rows), in fp32."""
    w = tl.load(w_ptr + offset + cols).to(tl.float32)
    k = tl.load(k_ptr + offset + cols).to(tl.float32)
    a = tl.load(a_ptr + offset + cols).to(tl.float32)
    b = tl.load(b_ptr + offset + cols).to(tl.float32)
    v = tl.load(v_ptr + offset + rows).to(tl.float32)
    return w, k, v, a, b


@triton.jit
def forward_kernel(r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, s0_ptr, y_ptr, s_out_ptr, ckpt_ptr,
                   T, H: tl.constexpr, N: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr,
                   HAS_S0: tl.constexpr):
    bh = tl.program_id(0)
    rows = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, N)
    batch, head = bh // H, bh % H
    state_offsets = rows[:, None] * N + cols[None, :]
    if HAS_S0:
        S = tl.load(s0_ptr + bh * N * N + state_offsets)
    else:
        S = tl.zeros([ROWS, N], dtype=tl.float32)
    n_chunks = (T + CHUNK - 1) // CHUNK  # not tl.cdiv: the 3.9 interpreter cannot run it
    base = batch * T * H * N + head * N
    for t in range(T):
        if t % CHUNK == 0:
            tl.store(ckpt_ptr + (bh * n_chunks + t // CHUNK) * N * N + state_offsets, S)
        offset = base + t * H * N
        r = tl.load(r_ptr + offset + cols).to(tl.float32)
        w, k, v, a, b = load_step(w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, offset, cols, rows)
        decay = tl.exp(-tl.exp(w))
        sa = tl.sum(S * a[None, :], axis=1)
        S = S * decay[None, :] + sa[:, None] * b[None, :] + v[:, None] * k[None, :]
        y = tl.sum(S * r[None, :], axis=1)
        tl.store(y_ptr + offset + rows, y.to(y_ptr.dtype.element_ty))
    tl.store(s_out_ptr + bh * N * N + state_offsets, S)

@triton.jit
def backward_kernel(r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, dy_ptr, ds_out_ptr, ckpt_ptr, scratch_ptr,
                    dr_ptr, dw_ptr, dk_ptr, dv_ptr, da_ptr, db_ptr, ds0_ptr,
                    T, H: tl.constexpr, N: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr,
                    HAS_DS_OUT: tl.constexpr, SPLIT: tl.constexpr):
    bh = tl.program_id(0)
    row_block = tl.program_id(1)
    rows = row_block * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, N)
    batch, head = bh // H, bh % H
    state_offsets = rows[:, None] * N + cols[None, :]
    if HAS_DS_OUT:
        dS = tl.load(ds_out_ptr + bh * N * N + state_offsets)
    else:
        dS = tl.zeros([ROWS, N], dtype=tl.float32)
    n_chunks = (T + CHUNK - 1) // CHUNK  # not tl.cdiv: the 3.9 interpreter cannot run it
    base = batch * T * H * N + head * N
    # This program's private slice of the scratch: CHUNK states of ROWS x N.
    scratch = scratch_ptr + ((bh * tl.num_programs(1) + row_block) * CHUNK) * ROWS * N
    local_offsets = tl.arange(0, ROWS)[:, None] * N + cols[None, :]
    for c_rev in range(n_chunks):
        chunk = n_chunks - 1 - c_rev
        start = chunk * CHUNK
        length = tl.minimum(CHUNK, T - start)
        S = tl.load(ckpt_ptr + (bh * n_chunks + chunk) * N * N + state_offsets)
        for i in range(length):  # recompute: scratch[i] = S_{t-1} for t = start + i
            tl.store(scratch + i * ROWS * N + local_offsets, S)
            offset = base + (start + i) * H * N
            w, k, v, a, b = load_step(w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, offset, cols, rows)
            sa = tl.sum(S * a[None, :], axis=1)
            S = S * tl.exp(-tl.exp(w))[None, :] + sa[:, None] * b[None, :] + v[:, None] * k[None, :]
        tl.debug_barrier()
        for i_rev in range(length):
            i = length - 1 - i_rev
            offset = base + (start + i) * H * N
            r = tl.load(r_ptr + offset + cols).to(tl.float32)
            w, k, v, a, b = load_step(w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, offset, cols, rows)
            dy = tl.load(dy_ptr + offset + rows).to(tl.float32)
            S_prev = tl.load(scratch + i * ROWS * N + local_offsets)
            exp_w = tl.exp(w)
            decay = tl.exp(-exp_w)
            sa = tl.sum(S_prev * a[None, :], axis=1)
            S = S_prev * decay[None, :] + sa[:, None] * b[None, :] + v[:, None] * k[None, :]
            dS += dy[:, None] * r[None, :]
            dsa = tl.sum(dS * b[None, :], axis=1)
            dr = tl.sum(S * dy[:, None], axis=0)
            dk = tl.sum(dS * v[:, None], axis=0)
            db = tl.sum(dS * sa[:, None], axis=0)
            dw = tl.sum(dS * S_prev, axis=0) * decay * -exp_w
            da = tl.sum(S_prev * dsa[:, None], axis=0)
            tl.store(dv_ptr + offset + rows, tl.sum(dS * k[None, :], axis=1))
            if SPLIT:
                tl.atomic_add(dr_ptr + offset + cols, dr)
                tl.atomic_add(dk_ptr + offset + cols, dk)
                tl.atomic_add(db_ptr + offset + cols, db)
                tl.atomic_add(dw_ptr + offset + cols, dw)
                tl.atomic_add(da_ptr + offset + cols, da)
            else:
                tl.store(dr_ptr + offset + cols, dr)
                tl.store(dk_ptr + offset + cols, dk)
                tl.store(db_ptr + offset + cols, db)
                tl.store(dw_ptr + offset + cols, dw)
                tl.store(da_ptr + offset + cols, da)
            dS = dS * decay[None, :] + dsa[:, None] * a[None, :]
        tl.debug_barrier()
    tl.store(ds0_ptr + bh * N * N + state_offsets, dS)


@triton.jit
def state_pass_forward_kernel(s0_ptr, a_ptr, u_ptr, starts_ptr, s_out_ptr, n_chunks, N: tl.constexpr,
                              HAS_S0: tl.constexpr):
    """One (batch, head): S_{i+1} = S_i A_i + U_i over the chunks, saving each chunk's start S_i."""
    bh = tl.program_id(0)
    idx = tl.arange(0, N)
    offsets = idx[:, None] * N + idx[None, :]
    if HAS_S0:
        S = tl.load(s0_ptr + bh * N * N + offsets)
    else:
        S = tl.zeros([N, N], dtype=tl.float32)
    for i in range(n_chunks):
        base = (bh * n_chunks + i) * N * N
        tl.store(starts_ptr + base + offsets, S)
        A = tl.load(a_ptr + base + offsets)
        S = tl.dot(S, A, input_precision="tf32x3") + tl.load(u_ptr + base + offsets)
    tl.store(s_out_ptr + bh * N * N + offsets, S)


@triton.jit
def state_pass_backward_kernel(a_ptr, starts_ptr, d_starts_ptr, d_out_ptr, da_ptr, du_ptr, ds0_ptr, n_chunks,
                               N: tl.constexpr, HAS_D_STARTS: tl.constexpr, HAS_D_OUT: tl.constexpr):
    """The same pass backwards: dU_i = dS_{i+1}, dA_i = S_iᵀ dS_{i+1}, dS_i = dS_{i+1} A_iᵀ + d(start_i)."""
    bh = tl.program_id(0)
    idx = tl.arange(0, N)
    offsets = idx[:, None] * N + idx[None, :]
    transposed = idx[:, None] + idx[None, :] * N
    if HAS_D_OUT:
        dS = tl.load(d_out_ptr + bh * N * N + offsets)
    else:
        dS = tl.zeros([N, N], dtype=tl.float32)
    for j in range(n_chunks):
        base = (bh * n_chunks + n_chunks - 1 - j) * N * N
        tl.store(du_ptr + base + offsets, dS)
        start_t = tl.load(starts_ptr + base + transposed)
        tl.store(da_ptr + base + offsets, tl.dot(start_t, dS, input_precision="tf32x3"))
        a_t = tl.load(a_ptr + base + transposed)
        dS = tl.dot(dS, a_t, input_precision="tf32x3")
        if HAS_D_STARTS:
            dS += tl.load(d_starts_ptr + base + offsets)
    tl.store(ds0_ptr + bh * N * N + offsets, dS)
