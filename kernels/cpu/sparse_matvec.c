/* y = x W for one row x [in] and W [in][out] (a linear layer's weight, transposed), reading only
 * the rows of W whose x[i] is not 0: RWKV's channel mix feeds its value product relu(.)^2, which
 * is 0 for about half the hidden units at random init, so decoding a token reads that much less
 * of the layer's largest matrix; for a dense x it is a plain matrix-vector product. Nonzero rows
 * are taken four at a time, so each pass loads and stores y once. block7_one.c calls it for
 * every product of a decoded block; kernels/cpu_linear.py for the value product alone.
 */
#include <stdint.h>

void rows_matvec(int64_t in, int64_t out, const float *restrict W, const float *restrict x, float *restrict y)
{
    for (int64_t o = 0; o < out; o++)
        y[o] = 0.0f;
    int64_t rows[4];
    int n = 0;
    for (int64_t i = 0; i < in; i++) {
        if (x[i] == 0.0f)
            continue;
        rows[n++] = i;
        if (n == 4) {
            const float *restrict w0 = W + rows[0] * out, *restrict w1 = W + rows[1] * out;
            const float *restrict w2 = W + rows[2] * out, *restrict w3 = W + rows[3] * out;
            float x0 = x[rows[0]], x1 = x[rows[1]], x2 = x[rows[2]], x3 = x[rows[3]];
            for (int64_t o = 0; o < out; o++)
                y[o] += x0 * w0[o] + x1 * w1[o] + x2 * w2[o] + x3 * w3[o];
            n = 0;
        }
    }
    for (int k = 0; k < n; k++) {
        const float *restrict w = W + rows[k] * out;
        float xi = x[rows[k]];
        for (int64_t o = 0; o < out; o++)
            y[o] += xi * w[o];
    }
}
