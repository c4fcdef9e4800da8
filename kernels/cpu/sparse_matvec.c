/* y = x W for one row x [rows] and W [rows][cols] (a linear layer's weight, transposed), reading
 * only the rows of W whose x[i] is not 0: RWKV's channel mix feeds its value product relu(.)^2,
 * which is 0 for about half the hidden units at random init and most of them in trained models,
 * so decoding a token reads that much less of the layer's largest matrix.
 *
 * Columns [first, last) of y are done, so callers may split them across threads. `nonzero` is
 * scratch space for `rows` indices. Four rows at a time: each pass loads and stores y once.
 */
#include <stdint.h>

void sparse_rows_matvec(int64_t rows, int64_t cols, int64_t first, int64_t last, const float *restrict W,
                        const float *restrict x, float *restrict y, int64_t *restrict nonzero)
{
    int64_t n = 0;
    for (int64_t i = 0; i < rows; i++)
        if (x[i] != 0.0f)
            nonzero[n++] = i;
    for (int64_t o = first; o < last; o++)
        y[o] = 0.0f;
    int64_t g = 0;
    for (; g + 4 <= n; g += 4) {
        const float *restrict w0 = W + nonzero[g] * cols, *restrict w1 = W + nonzero[g + 1] * cols;
        const float *restrict w2 = W + nonzero[g + 2] * cols, *restrict w3 = W + nonzero[g + 3] * cols;
        float x0 = x[nonzero[g]], x1 = x[nonzero[g + 1]], x2 = x[nonzero[g + 2]], x3 = x[nonzero[g + 3]];
        for (int64_t o = first; o < last; o++)
            y[o] += x0 * w0[o] + x1 * w1[o] + x2 * w2[o] + x3 * w3[o];
    }
    for (; g < n; g++) {
        const float *restrict w = W + nonzero[g] * cols;
        float xi = x[nonzero[g]];
        for (int64_t o = first; o < last; o++)
            y[o] += xi * w[o];
    }
}
