/* gpt-oss attention for one query token per row (decode) on CPU, float32 math.

Built by optimized/cbuild.py, called by optimized/attention.py (attention_decode); its *_ref is the torch op
optimized.attention.attention (tests/test_optimized_ops.py). Same quirks as the op: query head h reads kv
head h / G; the sink is one extra logit per head in the softmax, dropped after it (not scaled); a key slot is
visible iff its position is >= 0, <= the query's, and (window > 0) within the last `window` positions.
At T = 1 the torch op is ~20 small tensor ops per layer whose fixed costs dwarf the math; here it is one call.
k, v may be float32 or bfloat16 (kv_bf16), read in place from the cache. With AVX-512 and D % 16 == 0 the
keys and values of a kv head are read once for its G query heads, 64 keys at a time with an online softmax
(flash-decoding: the sink starts the running max and denominator), dot products 16 lanes wide, exp vectorized
(Cephes, ~1 ulp), kv heads over OpenMP threads; otherwise a scalar path (a loop over D is a chain of D dependent
adds: 0.2 ms a layer at 168 keys, 30 ms for gpt-oss-20b's 64 heads at 4096 keys, against ~3 ms here on one
core), whose q.k dot products are 8 lanes wide on a CPU with AVX2 (D % 8 == 0; the chain is what costs there).
All sum in float32, in different orders. A row whose query position is -1
(padding) sees no key: its output is 0, as in the op (all probability goes to the sink).
Legend: B rows, S key slots, H q-heads, K kv-heads, G = H / K, D head_dim.
*/
#include "common.h"

typedef float (*dot_fn)(const float *q, const void *k, int64_t base, int kv_bf16, int64_t D);

static float dot_scalar(const float *q, const void *k, int64_t base, int kv_bf16, int64_t D) {
    float dot = 0.0f;
    for (int64_t d = 0; d < D; d++) dot += q[d] * load_f(k, base + d, kv_bf16);
    return dot;
}

#ifdef __x86_64__
/* D % 8 == 0: 8 lanes, two accumulators */
__attribute__((target("avx2,fma")))
static float dot_avx2(const float *q, const void *k, int64_t base, int kv_bf16, int64_t D) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) {
        __m256 kv = kv_bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(
                                  (const __m128i *)((const uint16_t *)k + base + d))), 16))  /* bf16: exact */
                            : _mm256_loadu_ps((const float *)k + base + d);
        if (d & 8) a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), kv, a1);
        else a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), kv, a0);
    }
    __m256 a = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
#endif

static void attend_scalar(const float *q, const void *k, const void *v, int kv_bf16, const float *sinks,
                      float sm_scale, int64_t window, const int64_t *q_pos, const int64_t *k_pos, float *out,
                      float *scratch, int64_t B, int64_t S, int64_t H, int64_t K, int64_t D, dot_fn dot_of) {
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
                scratch[s] = dot_of(qv, k, ((b * S + s) * K + kh) * D, kv_bf16, D) * sm_scale;
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
                for (int64_t d = 0; d < D; d++) kv_row[d] = load_f(v, base + d, kv_bf16);
                for (int64_t d = 0; d < D; d++) o[d] += p * kv_row[d];
            }
        }
    }
}

#ifdef __x86_64__
__attribute__((target("avx512f")))
static inline __m512 ld16(const void *p, int64_t i, int bf16) {
    if (!bf16) return _mm512_loadu_ps((const float *)p + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));  /* bf16 -> float32, exact */
}

/* the same math as attend_scalar, one kv head at a time and KB keys at a time (flash-decoding style): the G query
   heads of a kv head share each key and value read; per block, the scores stay in a small array, the running
   max and denominator start from the sink (exp(sink - sink) = 1) and rescale the running outputs when a block
   raises the max; the outputs are divided by the denominator once at the end. kv heads are split over OpenMP
   threads (each writes its own heads' outputs). */
#define PARALLEL_MIN (1 << 15)  /* K * S * D key elements; below, a parallel region costs more than it saves */
#define KB 64  /* keys per block (a multiple of 16): its values, widened once, stay in L1 for the G heads */
__attribute__((target("avx512f")))
static void attend_avx512(const float *q, const void *k, const void *v, int kv_bf16, const float *sinks,
                          float sm_scale, int64_t window, const int64_t *q_pos, const int64_t *k_pos, float *out,
                          int64_t B, int64_t S, int64_t H, int64_t K, int64_t D) {
    int64_t G = H / K, nd = D / 16;
    for (int64_t b = 0; b < B; b++) {
        int64_t qp = q_pos[b];
#pragma omp parallel for schedule(static) if (K * S * D >= PARALLEL_MIN)  /* kv heads over the threads */
        for (int64_t kh = 0; kh < K; kh++) {
            float mx[64], denom[64], sc[64 * KB];  /* per query head: running max, denominator; a block's scores */
            float vb[KB * 256];  /* the block's values as float32 (D <= 256) */
            int visible[KB];
            __m512 row[16];
            const float *qh = q + (b * H + kh * G) * D;  /* the G query heads of this kv head, (G, D) */
            float *oh = out + (b * H + kh * G) * D;      /* their outputs, (G, D), unnormalized until the end */
            for (int64_t g = 0; g < G; g++) {
                mx[g] = sinks[kh * G + g];  /* the sink is the first logit: max = sink, denominator = 1 */
                denom[g] = 1.0f;
                for (int64_t d = 0; d < D; d++) oh[g * D + d] = 0.0f;
            }
            for (int64_t s0 = 0; s0 < S; s0 += KB) {
                int64_t n = S - s0 < KB ? S - s0 : KB, any = 0;
                for (int64_t j = 0; j < n; j++) {
                    int64_t kp = k_pos[b * S + s0 + j];
                    any |= visible[j] = kp >= 0 && kp <= qp && (window <= 0 || qp - kp < window);
                }
                if (!any) continue;
                for (int64_t j = 0; j < n; j++) {  /* scores of the block, sc[g * KB + j] */
                    if (!visible[j]) {
                        for (int64_t g = 0; g < G; g++) sc[g * KB + j] = -INFINITY;
                        continue;
                    }
                    int64_t base = ((b * S + s0 + j) * K + kh) * D;
                    for (int64_t t = 0; t < nd; t++) row[t] = ld16(k, base + 16 * t, kv_bf16);
                    for (int64_t g = 0; g < G; g++) {
                        __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qh + g * D), row[0]);
                        for (int64_t t = 1; t < nd; t++)
                            acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh + g * D + 16 * t), row[t], acc);
                        sc[g * KB + j] = _mm512_reduce_add_ps(acc) * sm_scale;
                    }
                }
                for (int64_t j = n; j < KB; j++)
                    for (int64_t g = 0; g < G; g++) sc[g * KB + j] = -INFINITY;  /* a short last block */
                for (int64_t j = 0; j < n; j++) {  /* the block's visible values, widened once for all G heads */
                    if (!visible[j]) continue;
                    int64_t base = ((b * S + s0 + j) * K + kh) * D;
                    for (int64_t t = 0; t < nd; t++)
                        _mm512_storeu_ps(vb + j * D + 16 * t, ld16(v, base + 16 * t, kv_bf16));
                }
                for (int64_t g = 0; g < G; g++) {
                    float *sg = sc + g * KB, m = mx[g];
                    const __m512 ninf = _mm512_set1_ps(-INFINITY);
                    __m512 mv4 = _mm512_max_ps(_mm512_max_ps(_mm512_loadu_ps(sg), _mm512_loadu_ps(sg + 16)),
                                               _mm512_max_ps(_mm512_loadu_ps(sg + 32), _mm512_loadu_ps(sg + 48)));
                    float bm = _mm512_reduce_max_ps(mv4);  /* -inf for a block it cannot see */
                    m = bm > m ? bm : m;
                    float rescale = expf(mx[g] - m);  /* 1 unless this block raised the max */
                    const __m512 mv = _mm512_set1_ps(m);
                    __m512 sum = _mm512_setzero_ps();
                    for (int64_t j = 0; j < KB; j += 16) {
                        __m512 x = _mm512_loadu_ps(sg + j);
                        __mmask16 seen = _mm512_cmp_ps_mask(x, ninf, _CMP_NEQ_UQ);  /* hidden keys weigh 0 */
                        __m512 e = _mm512_maskz_mov_ps(seen, exp_avx512(_mm512_sub_ps(x, mv)));
                        _mm512_storeu_ps(sg + j, e);
                        sum = _mm512_add_ps(sum, e);
                    }
                    mx[g] = m;
                    denom[g] = denom[g] * rescale + _mm512_reduce_add_ps(sum);
                    __m512 acc[16];
                    const __m512 rv = _mm512_set1_ps(rescale);
                    for (int64_t t = 0; t < nd; t++) acc[t] = _mm512_mul_ps(_mm512_loadu_ps(oh + g * D + 16 * t), rv);
                    for (int64_t j = 0; j < n; j++) {
                        if (sg[j] == 0.0f) continue;  /* hidden (or underflowed): its vb row may be stale */
                        const __m512 pv = _mm512_set1_ps(sg[j]);
                        for (int64_t t = 0; t < nd; t++)
                            acc[t] = _mm512_fmadd_ps(pv, _mm512_loadu_ps(vb + j * D + 16 * t), acc[t]);
                    }
                    for (int64_t t = 0; t < nd; t++) _mm512_storeu_ps(oh + g * D + 16 * t, acc[t]);
                }
            }
            for (int64_t g = 0; g < G; g++) {
                const __m512 dv = _mm512_set1_ps(denom[g]);
                for (int64_t t = 0; t < nd; t++)
                    _mm512_storeu_ps(oh + g * D + 16 * t, _mm512_div_ps(_mm512_loadu_ps(oh + g * D + 16 * t), dv));
            }
        }
    }
}
#endif

/* q (B, H, D) float32, k/v (B, S, K, D), sinks (H,) float32, q_pos (B,), k_pos (B, S) int64, out (B, H, D)
   float32, scratch (S,) float32 (the scalar path's scores). */
void attention_decode(const float *q, const void *k, const void *v, int kv_bf16, const float *sinks,
                      float sm_scale, int64_t window, const int64_t *q_pos, const int64_t *k_pos, float *out,
                      float *scratch, int64_t B, int64_t S, int64_t H, int64_t K, int64_t D) {
#ifdef __x86_64__
    if (D % 16 == 0 && D <= 256 && H / K <= 64 && __builtin_cpu_supports("avx512f")) {
        attend_avx512(q, k, v, kv_bf16, sinks, sm_scale, window, q_pos, k_pos, out, B, S, H, K, D);
        return;
    }
    if (D % 8 == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        attend_scalar(q, k, v, kv_bf16, sinks, sm_scale, window, q_pos, k_pos, out, scratch, B, S, H, K, D, dot_avx2);
        return;
    }
#endif
    attend_scalar(q, k, v, kv_bf16, sinks, sm_scale, window, q_pos, k_pos, out, scratch, B, S, H, K, D, dot_scalar);
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
                float x1 = load_f(qkv, base + i, is_bf16), x2 = load_f(qkv, base + i + F, is_bf16);
                float r1 = x1 * c[i] - x2 * s[i], r2 = x2 * c[i] + x1 * s[i];
                if (is_bf16) {
                    uint16_t h1 = round_bf16(r1), h2 = round_bf16(r2);
                    if (j < H) {
                        q[j * D + i] = load_f(&h1, 0, 1);
                        q[j * D + i + F] = load_f(&h2, 0, 1);
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
