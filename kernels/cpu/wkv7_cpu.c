/* WKV7 forward on the CPU, fp32: the recurrence of kernels/wkv7_reference.py, one step at a time.
 *
 * Inference only (no backward): chat, eval and validation prefills. The torch chunked op spends
 * most of its time in small batched products and copies; this loop keeps each state row in
 * registers and touches it once per step.
 *
 * r, decay, k, v, a, b, y: [B, T, H, N] contiguous; decay = exp(-exp(w)) (computed by torch, which
 * vectorizes the exponentials). state: [B, H, N, N] value-major (S[i][j]: value i, key j), updated
 * in place; `heads` is B*H.
 */
#include <stdint.h>

void wkv7_forward(int64_t heads, int64_t T, int64_t H, int64_t N,
                  const float *restrict r, const float *restrict decay, const float *restrict k,
                  const float *restrict v, const float *restrict a, const float *restrict b,
                  float *restrict state, float *restrict y)
{
    for (int64_t bh = 0; bh < heads; bh++) {
        int64_t batch = bh / H, head = bh % H;
        float *restrict S = state + bh * N * N;
        for (int64_t t = 0; t < T; t++) {
            int64_t at = ((batch * T + t) * H + head) * N;
            const float *restrict rt = r + at, *restrict dt = decay + at, *restrict kt = k + at;
            const float *restrict vt = v + at, *restrict a_t = a + at, *restrict bt = b + at;
            for (int64_t i = 0; i < N; i++) {
                float *restrict row = S + i * N;
                float sa = 0.0f;
                for (int64_t j = 0; j < N; j++)
                    sa += row[j] * a_t[j];
                float vi = vt[i], out = 0.0f;
                for (int64_t j = 0; j < N; j++) {
                    float s = row[j] * dt[j] + sa * bt[j] + vi * kt[j];
                    row[j] = s;
                    out += s * rt[j];
                }
                y[at + i] = out;
            }
        }
    }
}
