// WKV7 forward and backward kernels, free of torch so a CPU harness can run them too.
//
// One block per (batch, head), N threads. In the forward pass thread i owns row i of the fp32
// state S [N value rows, N key columns]: S_t[i] = S_{t-1}[i] * d + (S_{t-1}[i] . a) b + v_i k,
// y_t[i] = S_t[i] . r. The six input vectors of a step are staged once in shared memory.
// The state entering every CHUNK steps is saved (layout [chunk][key j][value i], so the
// N threads write consecutive addresses) for the backward pass.
//
// Backward: thread n owns row n of dS (for the value-side gradients dv, d(S a)) and column n
// of dS (for the key-side gradients dr, dw, dk, da, db), so every gradient is a sum within
// one thread: no atomics, no cross-thread reductions. Per chunk, going backwards, the block
// first recomputes the chunk's states from the checkpoint into a scratch buffer, then walks
// the chunk in reverse. Exact: it never divides by a decay.
//
// Each thread loads its next step's six inputs while the current step computes, so the
// global-memory latency hides behind the arithmetic instead of stalling every step.
//
// The includer defines the portability layer: WKV_GLOBAL, WKV_DEVICE, WKV_SHARED,
// wkv_sync(), wkv_thread(), wkv_block(), wkv_to_float(x) and wkv_from_float<F>(x).
#pragma once

namespace wkv7 {

// One thread's element of a step's inputs, in fp32; w is the raw log(-log(decay)).
struct Step {
  float r, w, k, v, a, b;
};

template <typename F>
WKV_DEVICE Step load_step(const F* r, const F* w, const F* k, const F* v, const F* a, const F* b, long long at) {
  return Step{wkv_to_float(r[at]), wkv_to_float(w[at]), wkv_to_float(k[at]),
              wkv_to_float(v[at]), wkv_to_float(a[at]), wkv_to_float(b[at])};
}

// Flat index of element (batch, t, head, 0) in a [B, T, H, N] tensor.
WKV_DEVICE long long step_offset(int batch, int t, int T, int H, int head, int N) {
  return (((long long)batch * T + t) * H + head) * N;
}

template <typename F, int N, int CHUNK>
WKV_GLOBAL void forward_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ w,
                               const F* __restrict__ k, const F* __restrict__ v, const F* __restrict__ a,
                               const F* __restrict__ b, const float* __restrict__ s0, F* __restrict__ y,
                               float* __restrict__ s_out, float* __restrict__ checkpoints) {
  const int bh = wkv_block(), i = wkv_thread();
  const int batch = bh / H, head = bh % H;
  const int chunks = (T + CHUNK - 1) / CHUNK;
  WKV_SHARED float sr[N], sd[N], sk[N], sa[N], sb[N];

  float S[N];
  const float* s0_row = s0 ? s0 + ((long long)bh * N + i) * N : nullptr;
#pragma unroll
  for (int j = 0; j < N; j++) S[j] = s0_row ? s0_row[j] : 0.f;

  Step next = load_step(r, w, k, v, a, b, step_offset(batch, 0, T, H, head, N) + i);
  for (int t = 0; t < T; t++) {
    const long long at = step_offset(batch, t, T, H, head, N);
    const Step now = next;
    wkv_sync();  // everyone is done with the previous step's vectors
    sr[i] = now.r;
    sd[i] = expf(-expf(now.w));
    sk[i] = now.k;
    sa[i] = now.a;
    sb[i] = now.b;
    wkv_sync();
    if (t + 1 < T) next = load_step(r, w, k, v, a, b, at + (long long)H * N + i);
    if (t % CHUNK == 0) {
      float* c = checkpoints + ((long long)bh * chunks + t / CHUNK) * N * N;
#pragma unroll
      for (int j = 0; j < N; j++) c[j * N + i] = S[j];
    }
    float s_dot_a = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) s_dot_a += S[j] * sa[j];
    const float vi = now.v;
    float yi = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
      S[j] = S[j] * sd[j] + s_dot_a * sb[j] + vi * sk[j];
      yi += S[j] * sr[j];
    }
    y[at + i] = wkv_from_float<F>(yi);
  }
  float* out_row = s_out + ((long long)bh * N + i) * N;
#pragma unroll
  for (int j = 0; j < N; j++) out_row[j] = S[j];
}

// scratch: per block CHUNK states [step][key j][value i] and CHUNK vectors S_{t-1} a_t.
template <typename F, int N, int CHUNK>
WKV_GLOBAL void backward_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ w,
                                const F* __restrict__ k, const F* __restrict__ v, const F* __restrict__ a,
                                const F* __restrict__ b, const F* __restrict__ dy,
                                const float* __restrict__ ds_out, const float* __restrict__ checkpoints,
                                float* __restrict__ scratch, F* __restrict__ dr, F* __restrict__ dw,
                                F* __restrict__ dk, F* __restrict__ dv, F* __restrict__ da, F* __restrict__ db,
                                float* __restrict__ ds0) {
  const int bh = wkv_block(), n = wkv_thread();
  const int batch = bh / H, head = bh % H;
  const int chunks = (T + CHUNK - 1) / CHUNK;
  WKV_SHARED float sr[N], sd[N], sk[N], sa[N], sb[N], sv[N], sdy[N], ssa[N], sdsa[N];
  float* states = scratch + (long long)bh * CHUNK * (N * N + N);
  float* s_dot_a_at = states + CHUNK * N * N;

  // dS_row[j] = dS[n][j]; dS_col[i] = dS[i][n]: the same matrix, seen by row and by column.
  float dS_row[N], dS_col[N];
  const float* g = ds_out ? ds_out + (long long)bh * N * N : nullptr;
#pragma unroll
  for (int j = 0; j < N; j++) {
    dS_row[j] = g ? g[n * N + j] : 0.f;
    dS_col[j] = g ? g[j * N + n] : 0.f;
  }

  for (int c = chunks - 1; c >= 0; c--) {
    const int t0 = c * CHUNK, t1 = (t0 + CHUNK < T) ? t0 + CHUNK : T;
    {  // Recompute the chunk: thread n walks row n forward from the checkpoint.
      float S[N];
      const float* ck = checkpoints + ((long long)bh * chunks + c) * N * N;
#pragma unroll
      for (int j = 0; j < N; j++) S[j] = ck[j * N + n];
      Step next = load_step(r, w, k, v, a, b, step_offset(batch, t0, T, H, head, N) + n);
      for (int t = t0; t < t1; t++) {
        const long long at = step_offset(batch, t, T, H, head, N);
        const Step now = next;
        wkv_sync();
        sd[n] = expf(-expf(now.w));
        sk[n] = now.k;
        sa[n] = now.a;
        sb[n] = now.b;
        wkv_sync();
        if (t + 1 < t1) next = load_step(r, w, k, v, a, b, at + (long long)H * N + n);
        float* st = states + (t - t0) * N * N;
        float s_dot_a = 0.f;
#pragma unroll
        for (int j = 0; j < N; j++) {
          st[j * N + n] = S[j];  // S_{t-1}, the state the step starts from
          s_dot_a += S[j] * sa[j];
        }
        s_dot_a_at[(t - t0) * N + n] = s_dot_a;
#pragma unroll
        for (int j = 0; j < N; j++) S[j] = S[j] * sd[j] + s_dot_a * sb[j] + now.v * sk[j];
      }
    }
    long long at_next = step_offset(batch, t1 - 1, T, H, head, N);
    Step next = load_step(r, w, k, v, a, b, at_next + n);
    float dy_next = wkv_to_float(dy[at_next + n]);
    for (int t = t1 - 1; t >= t0; t--) {
      const long long at = at_next;
      const Step now = next;
      const float e_w = expf(now.w);
      wkv_sync();  // the scratch is complete; the previous step's vectors are consumed
      sr[n] = now.r;
      sd[n] = expf(-e_w);
      sk[n] = now.k;
      sa[n] = now.a;
      sb[n] = now.b;
      sv[n] = now.v;
      sdy[n] = dy_next;
      ssa[n] = s_dot_a_at[(t - t0) * N + n];
      wkv_sync();
      if (t > t0) {
        at_next = at - (long long)H * N;
        next = load_step(r, w, k, v, a, b, at_next + n);
        dy_next = wkv_to_float(dy[at_next + n]);
      }

      // dS_t gains y_t = S_t r_t's share: dy_t r_tᵀ.
      const float dy_n = sdy[n], r_n = sr[n];
      float dv_n = 0.f, dsa_n = 0.f;
#pragma unroll
      for (int j = 0; j < N; j++) {
        dS_row[j] += dy_n * sr[j];
        dv_n += dS_row[j] * sk[j];
        dsa_n += dS_row[j] * sb[j];
      }
      sdsa[n] = dsa_n;
      wkv_sync();

      // Column n: S_t[:, n] = S_{t-1}[:, n] d_n + (S_{t-1} a) b_n + v k_n, so dr_n needs only S_{t-1}.
      const float* prev = states + (t - t0) * N * N + n * N;
      const float d_n = sd[n], a_n = sa[n];
      float prev_dy = 0.f, sa_dy = 0.f, v_dy = 0.f, dd = 0.f, da_n = 0.f, dk_n = 0.f, db_n = 0.f;
#pragma unroll
      for (int i = 0; i < N; i++) {
        const float s = prev[i];
        const float dsc = dS_col[i] + sdy[i] * r_n;
        prev_dy += s * sdy[i];
        sa_dy += ssa[i] * sdy[i];
        v_dy += sv[i] * sdy[i];
        dd += s * dsc;
        da_n += s * sdsa[i];
        dk_n += dsc * sv[i];
        db_n += dsc * ssa[i];
        dS_col[i] = dsc * d_n + sdsa[i] * a_n;
      }
#pragma unroll
      for (int j = 0; j < N; j++) dS_row[j] = dS_row[j] * sd[j] + dsa_n * sa[j];

      dr[at + n] = wkv_from_float<F>(d_n * prev_dy + sb[n] * sa_dy + sk[n] * v_dy);
      // d/dw of exp(-exp(w)) is -exp(w - exp(w)): finite even where exp(w) overflows.
      dw[at + n] = wkv_from_float<F>(-dd * expf(now.w - e_w));
      dk[at + n] = wkv_from_float<F>(dk_n);
      dv[at + n] = wkv_from_float<F>(dv_n);
      da[at + n] = wkv_from_float<F>(da_n);
      db[at + n] = wkv_from_float<F>(db_n);
    }
  }
  float* out_row = ds0 + ((long long)bh * N + n) * N;
#pragma unroll
  for (int j = 0; j < N; j++) out_row[j] = dS_row[j];
}

}  // namespace wkv7
