/* One RWKV-7 block for one token, fp32, on the CPU: what trainer/model/one_token.py's
 * block7_one computes, as one call. Decoding a token runs ~70 small operators a layer; through
 * TorchScript each costs a few microseconds of dispatch, together about as much as a layer's
 * weight reads at chat sizes. Here they are loops over C-vectors between the matrix-vector
 * products, which stream each weight once.
 *
 * Every matrix is read as [in][out] rows (y = x W): nn.Linear weights stored column-major
 * (chat.lay_out_for_decoding), the low-rank mixes (w1, w2, ...) as they are, through
 * sparse_matvec.c's rows_matvec, which skips rows whose input is 0 (the channel mix's relu² input
 * makes that common).
 *
 * dims: C, H, N, F (the channel mix's width), dw, da, dv, dg (the low-rank widths), layer_id.
 * w: the weights in the order of enum WEIGHTS. The five inputs are read only; the five outputs
 * are written; scratch holds 16 C + F + dw + da + dv + dg floats.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

enum WEIGHTS { LN1_W, LN1_B, LN2_W, LN2_B, X_R, X_W, X_K, X_V, X_A, X_G, W0, W1, W2, A0, A1, A2, V0, V1, V2,
               G1, G2, K_K, K_A, R_K, R, K, V, O, LNX_W, LNX_B, FFN_X_K, FFN_K, FFN_V, N_WEIGHTS };

void rows_matvec(int64_t in, int64_t out, const float *restrict W, const float *restrict x,
                 float *restrict y);  /* sparse_matvec.c */

/* The mean of x[0..n) and 1 / sqrt(its biased variance + eps), as layer and group norms use. */
static float normalizer(int64_t n, const float *restrict x, float eps, float *mean_out)
{
    float mean = 0.0f, var = 0.0f;
    for (int64_t i = 0; i < n; i++)
        mean += x[i];
    mean /= (float)n;
    for (int64_t i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    *mean_out = mean;
    return 1.0f / sqrtf(var / (float)n + eps);
}

static void layer_norm(int64_t n, const float *restrict x, const float *restrict weight,
                       const float *restrict bias, float eps, float *restrict out)
{
    float mean, scale = normalizer(n, x, eps, &mean);
    for (int64_t i = 0; i < n; i++)
        out[i] = (x[i] - mean) * scale * weight[i] + bias[i];
}

static float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

void rwkv7_block_one(const int64_t *dims, float ln_eps, float lnx_eps, const float *const *w,
                     const float *restrict x_in, const float *restrict v_first_in,
                     const float *restrict att_prev, const float *restrict wkv_in,
                     const float *restrict ffn_prev, float *restrict x_out, float *restrict v_first_out,
                     float *restrict att_last, float *restrict wkv_out, float *restrict ffn_last,
                     float *restrict scratch)
{
    const int64_t C = dims[0], H = dims[1], N = dims[2], F = dims[3];
    const int64_t dw = dims[4], da = dims[5], dv = dims[6], dg = dims[7], layer_id = dims[8];
    float *xr = scratch, *xw = xr + C, *xk = xw + C, *xv = xk + C, *xa = xv + C, *xg = xa + C;
    float *r = xg + C, *decay = r + C, *k = decay + C, *v = k + C, *a = v + C, *g = a + C;
    float *kk = g + C, *y = kk + C, *t = y + C, *x1 = t + C, *low = x1 + C, *hidden = low + dw + da + dv + dg;

    /* time mix: ln1, token shift, the six mixes */
    layer_norm(C, x_in, w[LN1_W], w[LN1_B], ln_eps, att_last);
    for (int64_t c = 0; c < C; c++) {
        float x = att_last[c], d = att_prev[c] - x;
        xr[c] = x + d * w[X_R][c];
        xw[c] = x + d * w[X_W][c];
        xk[c] = x + d * w[X_K][c];
        xv[c] = x + d * w[X_V][c];
        xa[c] = x + d * w[X_A][c];
        xg[c] = x + d * w[X_G][c];
    }
    rows_matvec(C, C, w[R], xr, r);
    rows_matvec(C, C, w[K], xk, k);
    rows_matvec(C, C, w[V], xv, v);
    /* decay = exp(-exp(logsigmoid(z) - 0.5)) = exp(-e^-0.5 sigmoid(z)), z = w0 + tanh(xw w1) w2 */
    rows_matvec(C, dw, w[W1], xw, low);
    for (int64_t i = 0; i < dw; i++)
        low[i] = tanhf(low[i]);
    rows_matvec(dw, C, w[W2], low, t);
    for (int64_t c = 0; c < C; c++)
        decay[c] = expf(-0.60653065971263342f * sigmoid(w[W0][c] + t[c]));
    if (layer_id == 0) {
        memcpy(v_first_out, v, (size_t)C * sizeof(float));
    } else {
        rows_matvec(C, dv, w[V1], xv, low);
        rows_matvec(dv, C, w[V2], low, t);
        for (int64_t c = 0; c < C; c++)
            v[c] += (v_first_in[c] - v[c]) * sigmoid(w[V0][c] + t[c]);
        memcpy(v_first_out, v_first_in, (size_t)C * sizeof(float));
    }
    rows_matvec(C, da, w[A1], xa, low);
    rows_matvec(da, C, w[A2], low, t);
    for (int64_t c = 0; c < C; c++)
        a[c] = sigmoid(w[A0][c] + t[c]);
    rows_matvec(C, dg, w[G1], xg, low);
    for (int64_t i = 0; i < dg; i++)
        low[i] = sigmoid(low[i]);
    rows_matvec(dg, C, w[G2], low, g);

    for (int64_t h = 0; h < H; h++) {
        float *kh = kk + h * N, norm = 0.0f;
        for (int64_t j = 0; j < N; j++) {
            kh[j] = k[h * N + j] * w[K_K][h * N + j];
            norm += kh[j] * kh[j];
        }
        norm = sqrtf(norm);
        float inverse = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
        for (int64_t j = 0; j < N; j++)
            kh[j] *= inverse;
    }
    for (int64_t c = 0; c < C; c++)
        k[c] *= 1.0f + (a[c] - 1.0f) * w[K_A][c];

    /* the WKV step per head (S value-major), its group norm, the bonus, the gate */
    for (int64_t h = 0; h < H; h++) {
        const float *rh = r + h * N, *dh = decay + h * N, *kh = k + h * N, *vh = v + h * N;
        const float *kkh = kk + h * N, *ah = a + h * N;
        float *yh = y + h * N;
        for (int64_t i = 0; i < N; i++) {
            const float *restrict old = wkv_in + (h * N + i) * N;
            float *restrict row = wkv_out + (h * N + i) * N;
            float sa = 0.0f;
            for (int64_t j = 0; j < N; j++)
                sa += old[j] * kkh[j];
            float vi = vh[i], out = 0.0f;
            for (int64_t j = 0; j < N; j++) {
                float s = old[j] * dh[j] - sa * kkh[j] * ah[j] + vi * kh[j];
                row[j] = s;
                out += s * rh[j];
            }
            yh[i] = out;
        }
        float mean, scale = normalizer(N, yh, lnx_eps, &mean), bonus = 0.0f;
        for (int64_t j = 0; j < N; j++)
            bonus += rh[j] * kh[j] * w[R_K][h * N + j];
        for (int64_t i = 0; i < N; i++) {
            int64_t c = h * N + i;
            float normed = (yh[i] - mean) * scale * w[LNX_W][c] + w[LNX_B][c];
            yh[i] = (normed + bonus * vh[i]) * g[c];
        }
    }
    rows_matvec(C, C, w[O], y, t);
    for (int64_t c = 0; c < C; c++)
        x1[c] = x_in[c] + t[c];

    /* channel mix: ln2, token shift, relu(x K)², then the value product skipping its zeros */
    layer_norm(C, x1, w[LN2_W], w[LN2_B], ln_eps, ffn_last);
    for (int64_t c = 0; c < C; c++)
        xk[c] = ffn_last[c] + (ffn_prev[c] - ffn_last[c]) * w[FFN_X_K][c];
    rows_matvec(C, F, w[FFN_K], xk, hidden);
    for (int64_t i = 0; i < F; i++) {
        float relu = hidden[i] > 0.0f ? hidden[i] : 0.0f;
        hidden[i] = relu * relu;
    }
    rows_matvec(F, C, w[FFN_V], hidden, t);
    for (int64_t c = 0; c < C; c++)
        x_out[c] = x1[c] + t[c];
}
