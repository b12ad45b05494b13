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

static inline uint16_t round_bf16(float f) {  /* round to nearest even, as torch's float -> bfloat16 */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);  /* NaN stays NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* The attention block's middle for one new token per row, as attention.py's decode path does it step by step:
   RoPE on the q and k heads of qkv (float32 math, halves rotated: i pairs with i + D/2; the result rounded to
   the activation dtype), the rotated k and the v written into the cache at slot pos % S with its position,
   then attention over the cache (attention_decode). qkv (B, (H + 2K) * D) and the cache in float32 or bf16
   (is_bf16); cos, sin (B, D/2) float32; pos (B,) >= 0; out (B, H, D) float32; scratch (S + H * D) floats. */
void attention_decode_block(const void *qkv, int is_bf16, const float *cos, const float *sin, const int64_t *pos,
                            void *k_cache, void *v_cache, int64_t *pos_cache, const float *sinks, float sm_scale,
                            int64_t window, float *out, float *scratch, int64_t B, int64_t S, int64_t H, int64_t K,
                            int64_t D) {
    int64_t F = D / 2, W = (H + 2 * K) * D;
    float *q = scratch + S;  /* (H, D): this row's rotated queries */
    for (int64_t b = 0; b < B; b++) {
        int64_t p = pos[b], slot = p % S;
        const float *c = cos + b * F, *s = sin + b * F;
        for (int64_t j = 0; j < H + K; j++) {  /* q heads, then k heads */
            int64_t base = b * W + j * D;
            for (int64_t i = 0; i < F; i++) {
                float x1 = ld(qkv, base + i, is_bf16), x2 = ld(qkv, base + i + F, is_bf16);
                float r1 = x1 * c[i] - x2 * s[i], r2 = x2 * c[i] + x1 * s[i];
                if (is_bf16) {
                    uint16_t h1 = round_bf16(r1), h2 = round_bf16(r2);
                    if (j < H) {
                        q[j * D + i] = ld(&h1, 0, 1);
                        q[j * D + i + F] = ld(&h2, 0, 1);
                    } else {
                        uint16_t *kc = (uint16_t *)k_cache + ((b * S + slot) * K + (j - H)) * D;
                        kc[i] = h1;
                        kc[i + F] = h2;
                    }
                } else if (j < H) {
                    q[j * D + i] = r1;
                    q[j * D + i + F] = r2;
                } else {
                    float *kc = (float *)k_cache + ((b * S + slot) * K + (j - H)) * D;
                    kc[i] = r1;
                    kc[i + F] = r2;
                }
            }
        }
        size_t el = is_bf16 ? 2 : 4;  /* v: copied as is */
        memcpy((char *)v_cache + ((b * S + slot) * K) * D * el, (const char *)qkv + (b * W + (H + K) * D) * el,
               K * D * el);
        pos_cache[b * S + slot] = p;
        attention_decode(q, (const char *)k_cache + b * S * K * D * el, (const char *)v_cache + b * S * K * D * el,
                         is_bf16, sinks, sm_scale, window, &p, pos_cache + b * S, out + b * H * D, scratch, 1, S, H,
                         K, D);
    }
}
