// WKV7 forward and backward kernels, free of torch so a CPU harness can run them too.
//
// One block per (batch, head). The fp32 state S [N value rows, N key columns] is split over
// N·P threads: thread (n, p) holds the P-strided columns j = jj·P + p of row n (M = N/P values),
// and P consecutive lanes of a warp share a row, adding their partial sums with shuffles.
// Splitting a row cuts the serial chain of multiply-adds per step P-fold: with few heads
// (batch 1, 12-40 heads) a step's latency, not the GPU's width, bounds the speed. Strided
// columns keep the P lanes' shared-memory reads in distinct banks.
//
// Forward: S_t[i] = S_{t-1}[i] * d + (S_{t-1}[i] . a) b + v_i k, y_t[i] = S_t[i] . r. A step's
// input vectors are staged once in shared memory; each loader thread fetches its next step's
// inputs while the current step computes. The fp32 state entering every CHUNK steps is saved
// (layout [chunk][key j][value i]) for the backward pass.
//
// Backward: thread (n, p) also holds part of row n and of column n of dS, so each gradient is
// one group's sum: dv and d(S a) from rows, dr, dw, dk, da, db from columns. No atomics. Per
// chunk, going backwards, the block recomputes the chunk's states from the checkpoint into a
// scratch buffer, then walks the chunk in reverse. Exact: it never divides by a decay.
//
// The includer defines the portability layer: WKV_GLOBAL, WKV_DEVICE, WKV_SHARED, wkv_sync(),
// wkv_thread(), wkv_block(), wkv_shfl_xor(value, lane_mask), wkv_to_float(x), wkv_from_float<F>(x).
#pragma once

#include <type_traits>

namespace wkv7 {

// The launch configuration, shared by wkv7.cu and the CPU harness so both run the same kernels.
constexpr int kChunk = 16;         // steps between fp32 state checkpoints
constexpr int kThreadsPerRow = 4;  // P below: a block has N·P threads

// Calls fn(std::integral_constant<int, N>) for the head sizes the kernels are built for (a
// thread keeps up to 3·N/P fp32 values in registers); false for any other size.
template <typename Fn>
bool with_head_size(int N, Fn&& fn) {
  switch (N) {
    case 16: fn(std::integral_constant<int, 16>{}); return true;
    case 32: fn(std::integral_constant<int, 32>{}); return true;
    case 64: fn(std::integral_constant<int, 64>{}); return true;
    default: return false;
  }
}

// One loader thread's element of a step's inputs, in fp32; w is the raw log(-log(decay)).
struct Step {
  float r, w, k, v, a, b;
};

template <typename F>
WKV_DEVICE Step load_step(const F* r, const F* w, const F* k, const F* v, const F* a, const F* b, long long at) {
  return Step{wkv_to_float(r[at]), wkv_to_float(w[at]), wkv_to_float(k[at]),
              wkv_to_float(v[at]), wkv_to_float(a[at]), wkv_to_float(b[at])};
}

// Stage element e of a step's decay, k, v, a and b in the block's shared vectors.
WKV_DEVICE void stage_step(const Step& step, int e, float* sd, float* sk, float* sv, float* sa, float* sb) {
  sd[e] = expf(-expf(step.w));
  sk[e] = step.k;
  sv[e] = step.v;
  sa[e] = step.a;
  sb[e] = step.b;
}

// Flat index of element (batch, t, head, 0) in a [B, T, H, N] tensor.
WKV_DEVICE long long step_offset(int batch, int t, int T, int H, int head, int N) {
  return (((long long)batch * T + t) * H + head) * N;
}

// The sum of x over the P consecutive lanes that share a row; every lane gets it.
template <int P>
WKV_DEVICE float row_sum(float x) {
#pragma unroll
  for (int lane_mask = 1; lane_mask < P; lane_mask <<= 1) x += wkv_shfl_xor(x, lane_mask);
  return x;
}

template <typename F, int N, int CHUNK, int P>
WKV_GLOBAL void forward_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ w,
                               const F* __restrict__ k, const F* __restrict__ v, const F* __restrict__ a,
                               const F* __restrict__ b, const float* __restrict__ s0, F* __restrict__ y,
                               float* __restrict__ s_out, float* __restrict__ checkpoints) {
  constexpr int M = N / P;
  const int bh = wkv_block(), tid = wkv_thread(), n = tid / P, p = tid % P;
  const int batch = bh / H, head = bh % H;
  const int chunks = (T + CHUNK - 1) / CHUNK;
  const bool loader = tid < N;  // thread e < N stages element e of each input vector
  WKV_SHARED float sr[N], sd[N], sk[N], sv[N], sa[N], sb[N];

  float S[M];  // S[n][jj * P + p]
  const float* s0_row = s0 ? s0 + ((long long)bh * N + n) * N : nullptr;
#pragma unroll
  for (int jj = 0; jj < M; jj++) S[jj] = s0_row ? s0_row[jj * P + p] : 0.f;

  Step next{};
  if (loader) next = load_step(r, w, k, v, a, b, step_offset(batch, 0, T, H, head, N) + tid);
  for (int t = 0; t < T; t++) {
    const long long at = step_offset(batch, t, T, H, head, N);
    const Step now = next;
    wkv_sync();  // everyone is done with the previous step's vectors
    if (loader) {
      sr[tid] = now.r;
      stage_step(now, tid, sd, sk, sv, sa, sb);
    }
    wkv_sync();
    if (loader && t + 1 < T) next = load_step(r, w, k, v, a, b, at + (long long)H * N + tid);
    if (t % CHUNK == 0) {
      float* c = checkpoints + ((long long)bh * chunks + t / CHUNK) * N * N;
#pragma unroll
      for (int jj = 0; jj < M; jj++) c[(jj * P + p) * N + n] = S[jj];
    }
    float part = 0.f;
#pragma unroll
    for (int jj = 0; jj < M; jj++) part += S[jj] * sa[jj * P + p];
    const float s_dot_a = row_sum<P>(part), vn = sv[n];
    part = 0.f;
#pragma unroll
    for (int jj = 0; jj < M; jj++) {
      const int j = jj * P + p;
      S[jj] = S[jj] * sd[j] + s_dot_a * sb[j] + vn * sk[j];
      part += S[jj] * sr[j];
    }
    const float yn = row_sum<P>(part);
    if (p == 0) y[at + n] = wkv_from_float<F>(yn);
  }
  float* out_row = s_out + ((long long)bh * N + n) * N;
#pragma unroll
  for (int jj = 0; jj < M; jj++) out_row[jj * P + p] = S[jj];
}

// scratch: per block CHUNK states [step][key j][value i] and CHUNK vectors S_{t-1} a_t.
template <typename F, int N, int CHUNK, int P>
WKV_GLOBAL void backward_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ w,
                                const F* __restrict__ k, const F* __restrict__ v, const F* __restrict__ a,
                                const F* __restrict__ b, const F* __restrict__ dy,
                                const float* __restrict__ ds_out, const float* __restrict__ checkpoints,
                                float* __restrict__ scratch, F* __restrict__ dr, F* __restrict__ dw,
                                F* __restrict__ dk, F* __restrict__ dv, F* __restrict__ da, F* __restrict__ db,
                                float* __restrict__ ds0) {
  constexpr int M = N / P;
  const int bh = wkv_block(), tid = wkv_thread(), n = tid / P, p = tid % P;
  const int batch = bh / H, head = bh % H;
  const int chunks = (T + CHUNK - 1) / CHUNK;
  const bool loader = tid < N;
  WKV_SHARED float sr[N], sd[N], sk[N], sa[N], sb[N], sv[N], sdy[N], ssa[N], sdsa[N], sdecay_dw[N];
  float* states = scratch + (long long)bh * CHUNK * (N * N + N);
  float* s_dot_a_at = states + CHUNK * N * N;

  // dS_row[jj] = dS[n][jj·P + p]; dS_col[ii] = dS[ii·P + p][n]: one matrix, by row and by column.
  float dS_row[M], dS_col[M];
  const float* g = ds_out ? ds_out + (long long)bh * N * N : nullptr;
#pragma unroll
  for (int jj = 0; jj < M; jj++) {
    dS_row[jj] = g ? g[n * N + jj * P + p] : 0.f;
    dS_col[jj] = g ? g[(jj * P + p) * N + n] : 0.f;
  }

  for (int c = chunks - 1; c >= 0; c--) {
    const int t0 = c * CHUNK, t1 = (t0 + CHUNK < T) ? t0 + CHUNK : T;
    {  // Recompute the chunk: row n forward from the checkpoint.
      float S[M];
      const float* ck = checkpoints + ((long long)bh * chunks + c) * N * N;
#pragma unroll
      for (int jj = 0; jj < M; jj++) S[jj] = ck[(jj * P + p) * N + n];
      Step next{};
      if (loader) next = load_step(r, w, k, v, a, b, step_offset(batch, t0, T, H, head, N) + tid);
      for (int t = t0; t < t1; t++) {
        const long long at = step_offset(batch, t, T, H, head, N);
        const Step now = next;
        wkv_sync();
        if (loader) stage_step(now, tid, sd, sk, sv, sa, sb);
        wkv_sync();
        if (loader && t + 1 < t1) next = load_step(r, w, k, v, a, b, at + (long long)H * N + tid);
        float* st = states + (t - t0) * N * N;
        float part = 0.f;
#pragma unroll
        for (int jj = 0; jj < M; jj++) {
          st[(jj * P + p) * N + n] = S[jj];  // S_{t-1}, the state the step starts from
          part += S[jj] * sa[jj * P + p];
        }
        const float s_dot_a = row_sum<P>(part), vn = sv[n];
        if (p == 0) s_dot_a_at[(t - t0) * N + n] = s_dot_a;
#pragma unroll
        for (int jj = 0; jj < M; jj++) {
          const int j = jj * P + p;
          S[jj] = S[jj] * sd[j] + s_dot_a * sb[j] + vn * sk[j];
        }
      }
    }
    long long at_next = step_offset(batch, t1 - 1, T, H, head, N);
    Step next{};
    float dy_next = 0.f;
    if (loader) {
      next = load_step(r, w, k, v, a, b, at_next + tid);
      dy_next = wkv_to_float(dy[at_next + tid]);
    }
    for (int t = t1 - 1; t >= t0; t--) {
      const long long at = at_next;
      const Step now = next;
      const float e_w = expf(now.w);
      wkv_sync();  // the scratch is complete; the previous step's vectors are consumed
      if (loader) {
        sr[tid] = now.r;
        sd[tid] = expf(-e_w);
        sk[tid] = now.k;
        sa[tid] = now.a;
        sb[tid] = now.b;
        sv[tid] = now.v;
        sdy[tid] = dy_next;
        ssa[tid] = s_dot_a_at[(t - t0) * N + tid];
        // d/dw of exp(-exp(w)) is -exp(w - exp(w)): finite even where exp(w) overflows.
        sdecay_dw[tid] = -expf(now.w - e_w);
      }
      wkv_sync();
      at_next = at - (long long)H * N;
      if (loader && t > t0) {
        next = load_step(r, w, k, v, a, b, at_next + tid);
        dy_next = wkv_to_float(dy[at_next + tid]);
      }

      // dS_t gains y_t = S_t r_t's share: dy_t r_tᵀ. Row n's sums first (d(S a) is needed below).
      const float dy_n = sdy[n], r_n = sr[n];
      float dv_part = 0.f, dsa_part = 0.f;
#pragma unroll
      for (int jj = 0; jj < M; jj++) {
        const int j = jj * P + p;
        dS_row[jj] += dy_n * sr[j];
        dv_part += dS_row[jj] * sk[j];
        dsa_part += dS_row[jj] * sb[j];
      }
      const float dv_n = row_sum<P>(dv_part), dsa_n = row_sum<P>(dsa_part);
      if (p == 0) sdsa[n] = dsa_n;
      wkv_sync();

      // Column n: S_t[:, n] = S_{t-1}[:, n] d_n + (S_{t-1} a) b_n + v k_n, so dr_n needs only S_{t-1}.
      const float* prev = states + (t - t0) * N * N + n * N;
      const float d_n = sd[n], a_n = sa[n];
      float prev_dy = 0.f, sa_dy = 0.f, v_dy = 0.f, dd = 0.f, da_n = 0.f, dk_n = 0.f, db_n = 0.f;
#pragma unroll
      for (int ii = 0; ii < M; ii++) {
        const int i = ii * P + p;
        const float s = prev[i];
        const float dsc = dS_col[ii] + sdy[i] * r_n;
        prev_dy += s * sdy[i];
        sa_dy += ssa[i] * sdy[i];
        v_dy += sv[i] * sdy[i];
        dd += s * dsc;
        da_n += s * sdsa[i];
        dk_n += dsc * sv[i];
        db_n += dsc * ssa[i];
        dS_col[ii] = dsc * d_n + sdsa[i] * a_n;
      }
      prev_dy = row_sum<P>(prev_dy);
      sa_dy = row_sum<P>(sa_dy);
      v_dy = row_sum<P>(v_dy);
      dd = row_sum<P>(dd);
      da_n = row_sum<P>(da_n);
      dk_n = row_sum<P>(dk_n);
      db_n = row_sum<P>(db_n);
#pragma unroll
      for (int jj = 0; jj < M; jj++) {
        const int j = jj * P + p;
        dS_row[jj] = dS_row[jj] * sd[j] + dsa_n * sa[j];
      }

      if (p == 0) {
        dr[at + n] = wkv_from_float<F>(d_n * prev_dy + sb[n] * sa_dy + sk[n] * v_dy);
        dw[at + n] = wkv_from_float<F>(dd * sdecay_dw[n]);
        dk[at + n] = wkv_from_float<F>(dk_n);
        dv[at + n] = wkv_from_float<F>(dv_n);
        da[at + n] = wkv_from_float<F>(da_n);
        db[at + n] = wkv_from_float<F>(db_n);
      }
    }
  }
  float* out_row = ds0 + ((long long)bh * N + n) * N;
#pragma unroll
  for (int jj = 0; jj < M; jj++) out_row[jj * P + p] = dS_row[jj];
}

}  // namespace wkv7
