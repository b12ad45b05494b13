/* gpt-oss attention for one query token per row (decode) on CPU, float32 math.

Built by optimized/cbuild.py, called by optimized/attention.py (attention_decode); its *_ref is the torch op
optimized.attention.attention (tests/test_optimized_ops.py). Same quirks as the op: query head h reads kv
head h / G; the sink is one extra logit per head in the softmax, dropped after it (not scaled); a key slot is
visible iff its position is >= 0, <= the query's, and (window > 0) within the last `window` positions.
At T = 1 the torch op is ~20 small tensor ops per layer whose fixed costs dwarf the math; here it is one call.
k, v may be float32 or bfloat16 (kv_bf16), read in place from the cache. A row whose query position is -1
(padding) sees no key: its output is 0, as in the op (all probability goes to the sink).
Legend: B rows, S key slots, H q-heads, K kv-heads, G = H / K, D head_dim.
*/
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float ld(const void *p, int64_t i, int bf16) {
    if (!bf16) return ((const float *)p)[i];
    uint32_t bits = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* q (B, H, D) float32, k/v (B, S, K, D), sinks (H,) float32, q_pos (B,), k_pos (B, S) int64, out (B, H, D)
   float32, scratch (S,) float32. */
void attention_decode(const float *q, const void *k, const void *v, int kv_bf16, const float *sinks,
                      float sm_scale, int64_t window, const int64_t *q_pos, const int64_t *k_pos, float *out,
                      float *scratch, int64_t B, int64_t S, int64_t H, int64_t K, int64_t D) {
    int64_t G = H / K;
    float kv_row[256];  /* one key or value vector widened to float32 (D <= 256, checked by the caller) */
    for (int64_t b = 0; b < B; b++) {
        int64_t qp = q_pos[b];
        for (int64_t h = 0; h < H; h++) {
            const float *qv = q + (b * H + h) * D;
            int64_t kh = h / G;
            float mx = sinks[h];
            for (int64_t s = 0; s < S; s++) {
                int64_t kp = k_pos[b * S + s];
                int visible = kp >= 0 && kp <= qp && (window <= 0 || qp - kp < window);
                if (!visible) {
                    scratch[s] = -INFINITY;
                    continue;
                }
                int64_t base = ((b * S + s) * K + kh) * D;
                float dot = 0.0f;
                for (int64_t d = 0; d < D; d++) dot += qv[d] * ld(k, base + d, kv_bf16);
                scratch[s] = dot * sm_scale;
                if (scratch[s] > mx) mx = scratch[s];
            }
            float denom = expf(sinks[h] - mx);
            for (int64_t s = 0; s < S; s++) {
                float e = scratch[s] == -INFINITY ? 0.0f : expf(scratch[s] - mx);
                scratch[s] = e;
                denom += e;
            }
            float *o = out + (b * H + h) * D;
            for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
            for (int64_t s = 0; s < S; s++) {
                if (scratch[s] == 0.0f) continue;
                float p = scratch[s] / denom;
                int64_t base = ((b * S + s) * K + kh) * D;
                for (int64_t d = 0; d < D; d++) kv_row[d] = ld(v, base + d, kv_bf16);
                for (int64_t d = 0; d < D; d++) o[d] += p * kv_row[d];
            }
        }
    }
}
