/* The gpt-oss router's top-k and softmax for a few rows on CPU (a decode step).

Built by optimized/cbuild.py, called by optimized/moe.py's `route`; its *_ref is the torch path there (a stable
descending sort, the first k, softmax over those k), tested in tests/test_optimized_ops.py.
Quirks, as in the torch path: ties go to the lower expert id (a later id must be strictly greater to win);
the softmax runs over the k chosen logits only. A NaN logit ranks above every number (as torch's descending
sort puts it first) and makes that row's weights NaN, so it cannot pass unnoticed.
Why: torch's sort + slice + softmax costs ~20-80 us a call on CPU, once per layer per decode step; this ~1 us.
Legend: N rows, E experts, k chosen per row.
*/
#include "common.h"

static inline int above(float a, float b) { return (isnan(a) && !isnan(b)) || a > b; }

/* logits (N, E) float32, or bf16 as uint16 when bf16; ids (N, k) int32; weights (N, k) float32. k <= E, k <= 64. */
void route_rows(const void *logits, int bf16, int64_t N, int64_t E, int64_t k, int32_t *ids, float *weights) {
    for (int64_t n = 0; n < N; n++) {
        float v[64];
        int32_t *id = ids + n * k;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            float bv = 0.0f;
            for (int64_t e = 0; e < E; e++) {
                int done = 0;
                for (int64_t i = 0; i < j; i++) done |= id[i] == e;
                if (done) continue;
                float x = bf16 ? widen(((const uint16_t *)logits)[n * E + e]) : ((const float *)logits)[n * E + e];
                if (best < 0 || above(x, bv)) best = e, bv = x;  /* strictly above: ties keep the lower id */
            }
            id[j] = (int32_t)best;
            v[j] = bv;
        }
        float m = v[0], sum = 0.0f;  /* v[0] is the largest */
        for (int64_t j = 0; j < k; j++) sum += (v[j] = expf(v[j] - m));
        for (int64_t j = 0; j < k; j++) weights[n * k + j] = v[j] / sum;
    }
}
