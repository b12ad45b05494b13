/* RMSNorm of a few rows on CPU: out = x * rsqrt(mean(x^2) + eps) * scale, float32 math, one rounding at the end.

Built by optimized/cbuild.py, called by optimized/norm.py for the rows of a CPU decode step; its *_ref is
torch.nn.functional.rms_norm on the float32 copy (norm.py's general path; tests/test_optimized_ops.py).
Why: torch's CPU rms_norm costs 20-80 us on one 768-float row (dispatch, temporaries, cold caches after the
weight streams), 17 times a decode step; this is ~1 us.
x and out are float32 or bf16 (as uint16; widened exactly; the result rounded to nearest even, NaN kept NaN);
scale float32. The sum of squares uses 8 partial sums (another order than torch's; float32 either way).
Legend: N rows, C features.
*/
#include "common.h"

/* x (N, C), out (N, C): float32, or bf16 when x_bf16 / out_bf16; scale (C,) float32. */
void rms_norm_rows(const void *x, const float *scale, void *out, int64_t N, int64_t C, float eps, int x_bf16,
                   int out_bf16) {
    for (int64_t n = 0; n < N; n++) {
        const float *xf = (const float *)x + n * C;
        const uint16_t *xh = (const uint16_t *)x + n * C;
        float part[8] = {0};
        int64_t c = 0;
        for (; c + 8 <= C; c += 8)
            for (int j = 0; j < 8; j++) {
                float v = x_bf16 ? widen(xh[c + j]) : xf[c + j];
                part[j] += v * v;
            }
        for (; c < C; c++) {
            float v = x_bf16 ? widen(xh[c]) : xf[c];
            part[0] += v * v;
        }
        float ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        for (c = 0; c < C; c++) {
            float v = (x_bf16 ? widen(xh[c]) : xf[c]) * r * scale[c];
            if (out_bf16)
                ((uint16_t *)out)[n * C + c] = round_bf16(v);
            else
                ((float *)out)[n * C + c] = v;
        }
    }
}
