/* Routed MXFP4 matvec on CPU: out[r, o] = sum_k W_{ids[r]}[o, k] * x[r, k], straight from the packed bytes;
   and the whole MoE of a decode step built on it (mxfp4_moe_decode).

Built and loaded by optimized/mxfp4_cpu.py (gcc, no torch headers); its *_ref is optimized.mxfp4.matvec.
Layout (the release layout, read in place, never decoded to memory):
  blocks uint8 (E, O, B, 16): two FP4 E2M1 codes per byte, quirk: LOW nibble first (element 2j = byte j & 0xF)
  scales uint8 (E, O, B):     E8M0, weight = fp4 * 2**(scale - 127); scale 0 is the subnormal 2**-127
The scale is per block of 32 along k, so each block's dot product runs on the unscaled FP4 values and is then
multiplied by its scale: y = sum_b 2**(s_b - 127) * (codes_b . x_b).
AVX-512: the 16 FP4 values fit one register, so a byte's two codes are decoded by two in-register permutes
(vpermps), with x split once into its even and odd elements (low and high nibbles). AVX2 (CPUs without
AVX-512): a ymm holds the 8 magnitudes, vpermps reads a code's low 3 bits, and a shift and a xor move its bit 3
(the sign) into place (common.h's fp4_avx2). A scalar path serves other CPUs; all sum in float32.
Legend: R routed rows, E experts, O output rows, B blocks of 32 along k.
*/
#include "common.h"

/* x (B*32) -> xe, xo (B*16): the elements the low and the high nibbles multiply */
static void split(const float *x, float *xe, float *xo, int64_t B) {
    for (int64_t i = 0; i < B * 16; i++) {
        xe[i] = x[2 * i];
        xo[i] = x[2 * i + 1];
    }
}

static void rows_scalar(const uint8_t *bl, const uint8_t *sc, const float *xe, const float *xo, float *out,
                        int64_t o0, int64_t o1, int64_t B) {
    for (int64_t o = o0; o < o1; o++) {
        float acc = 0.0f;
        for (int64_t b = 0; b < B; b++) {
            const uint8_t *p = bl + (o * B + b) * 16;
            float part = 0.0f;
            for (int j = 0; j < 16; j++)
                part += FP4[p[j] & 15] * xe[b * 16 + j] + FP4[p[j] >> 4] * xo[b * 16 + j];
            acc += part * e8m0(sc[o * B + b]);
        }
        out[o] = acc;
    }
}

#ifdef __x86_64__
/* one block of 16 bytes: the unscaled dot product of its 32 codes with x's block (even and odd halves) */
#define BLOCK_DOT(ptr, xe_b, xo_b)                                                                         \
    ({                                                                                                     \
        __m512i c_ = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ptr)));                        \
        __m512 wl_ = _mm512_permutexvar_ps(c_, table); /* vpermps reads the index's low 4 bits: even k */ \
        __m512 wh_ = _mm512_permutexvar_ps(_mm512_srli_epi32(c_, 4), table);  /* high nibbles: odd k */    \
        _mm512_fmadd_ps(wh_, xo_b, _mm512_mul_ps(wl_, xe_b));                                              \
    })

/* scales of `n` blocks (E8M0 bytes) -> their float32 powers of two, 16 at a time */
__attribute__((target("avx512f")))
static void scales_avx512(const uint8_t *s, float *f, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
        __mmask16 zero = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
        __m512i bits = _mm512_mask_mov_epi32(_mm512_slli_epi32(e, 23), zero, _mm512_set1_epi32(1 << 22));
        _mm512_storeu_si512(f + i, bits);
    }
    for (; i < n; i++) f[i] = e8m0(s[i]);
}

/* rows split over OpenMP threads (static, contiguous runs) from this many 32-blocks (~0.3 MB packed) up */
#define PARALLEL_MIN_BLOCKS (1 << 14)
__attribute__((target("avx512f")))
static void rows_avx512(const uint8_t *bl, const uint8_t *sc, const float *xe, const float *xo, float *out,
                        int64_t o0, int64_t o1, int64_t B) {
    const __m512 table = _mm512_loadu_ps(FP4);
    int64_t o4 = o0 + (o1 - o0) / 4 * 4;
#pragma omp parallel for schedule(static) if ((o1 - o0) * B >= PARALLEL_MIN_BLOCKS)
    for (int64_t o = o0; o < o4; o += 4) {  /* four rows at once: independent sums, x loaded once per block */
        const uint8_t *p = bl + o * B * 16;
        float sf[4 * B];  /* this thread's 4 rows of scales as float32 */
        scales_avx512(sc + o * B, sf, 4 * B);  /* broadcasts from memory below cost a load, not a shuffle */
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (int64_t b = 0; b < B; b++) {
            if ((b & 3) == 0)  /* a line of each of the 4 rows every 4 blocks, PREFETCH_BYTES ahead */
                for (int r = 0; r < 4; r++)
                    _mm_prefetch((const char *)(p + (r * B + b) * 16) + PREFETCH_BYTES, _MM_HINT_T0);
            __m512 xe_b = _mm512_loadu_ps(xe + b * 16), xo_b = _mm512_loadu_ps(xo + b * 16);
            a0 = _mm512_fmadd_ps(BLOCK_DOT(p + b * 16, xe_b, xo_b), _mm512_set1_ps(sf[b]), a0);
            a1 = _mm512_fmadd_ps(BLOCK_DOT(p + (B + b) * 16, xe_b, xo_b), _mm512_set1_ps(sf[B + b]), a1);
            a2 = _mm512_fmadd_ps(BLOCK_DOT(p + (2 * B + b) * 16, xe_b, xo_b), _mm512_set1_ps(sf[2 * B + b]), a2);
            a3 = _mm512_fmadd_ps(BLOCK_DOT(p + (3 * B + b) * 16, xe_b, xo_b), _mm512_set1_ps(sf[3 * B + b]), a3);
        }
        out[o] = _mm512_reduce_add_ps(a0);
        out[o + 1] = _mm512_reduce_add_ps(a1);
        out[o + 2] = _mm512_reduce_add_ps(a2);
        out[o + 3] = _mm512_reduce_add_ps(a3);
    }
    for (int64_t o = o4; o < o1; o++) {
        const uint8_t *p = bl + o * B * 16;
        const uint8_t *s = sc + o * B;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t b = 0; b < B; b++) {
            __m512 xe_b = _mm512_loadu_ps(xe + b * 16), xo_b = _mm512_loadu_ps(xo + b * 16);
            acc = _mm512_fmadd_ps(BLOCK_DOT(p + b * 16, xe_b, xo_b), _mm512_set1_ps(e8m0(s[b])), acc);
        }
        out[o] = _mm512_reduce_add_ps(acc);
    }
}

/* AVX2: 8 bytes of a block (low nibbles: 8 even k, high: 8 odd k) -> acc + their unscaled dot with x's halves */
#define HALF_DOT_AVX2(ptr, xe_h, xo_h, acc)                                                                    \
    ({                                                                                                        \
        __m256i c_ = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ptr)));                           \
        __m256 wl_ = fp4_avx2(c_, table), wh_ = fp4_avx2(_mm256_srli_epi32(c_, 4), table);                    \
        _mm256_fmadd_ps(wh_, xo_h, _mm256_fmadd_ps(wl_, xe_h, acc));                                          \
    })

__attribute__((target("avx2,fma")))
static inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* one row's block b (16 bytes): its unscaled dot product, 8 lanes */
#define BLOCK_DOT_AVX2(ptr, b)                                                                                \
    ({                                                                                                        \
        __m256 d_ = HALF_DOT_AVX2(ptr, _mm256_loadu_ps(xe + (b) * 16), _mm256_loadu_ps(xo + (b) * 16),         \
                                  _mm256_setzero_ps());                                                       \
        HALF_DOT_AVX2((ptr) + 8, _mm256_loadu_ps(xe + (b) * 16 + 8), _mm256_loadu_ps(xo + (b) * 16 + 8), d_);  \
    })

__attribute__((target("avx2,fma")))
static void rows_avx2(const uint8_t *bl, const uint8_t *sc, const float *xe, const float *xo, float *out,
                      int64_t o0, int64_t o1, int64_t B) {
    const __m256 table = _mm256_loadu_ps((const float *)FP4_XOR28);
    int64_t o4 = o0 + (o1 - o0) / 4 * 4;
#pragma omp parallel for schedule(static) if ((o1 - o0) * B >= PARALLEL_MIN_BLOCKS)
    for (int64_t o = o0; o < o4; o += 4) {  /* four rows at once, as rows_avx512 */
        const uint8_t *p = bl + o * B * 16, *s = sc + o * B;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t b = 0; b < B; b++) {
            if ((b & 3) == 0)
                for (int r = 0; r < 4; r++)
                    _mm_prefetch((const char *)(p + (r * B + b) * 16) + PREFETCH_BYTES, _MM_HINT_T0);
            a0 = _mm256_fmadd_ps(BLOCK_DOT_AVX2(p + b * 16, b), _mm256_set1_ps(e8m0(s[b])), a0);
            a1 = _mm256_fmadd_ps(BLOCK_DOT_AVX2(p + (B + b) * 16, b), _mm256_set1_ps(e8m0(s[B + b])), a1);
            a2 = _mm256_fmadd_ps(BLOCK_DOT_AVX2(p + (2 * B + b) * 16, b), _mm256_set1_ps(e8m0(s[2 * B + b])), a2);
            a3 = _mm256_fmadd_ps(BLOCK_DOT_AVX2(p + (3 * B + b) * 16, b), _mm256_set1_ps(e8m0(s[3 * B + b])), a3);
        }
        out[o] = hsum_avx2(a0);
        out[o + 1] = hsum_avx2(a1);
        out[o + 2] = hsum_avx2(a2);
        out[o + 3] = hsum_avx2(a3);
    }
    for (int64_t o = o4; o < o1; o++) {
        const uint8_t *p = bl + o * B * 16, *s = sc + o * B;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < B; b++) acc = _mm256_fmadd_ps(BLOCK_DOT_AVX2(p + b * 16, b), _mm256_set1_ps(e8m0(s[b])), acc);
        out[o] = hsum_avx2(acc);
    }
}
#endif

/* one packed matrix (O, B, 16) + scales (O, B) times x (B*32) -> out (O); scratch (32 * B) float32 */
static void matvec_one(const uint8_t *bl, const uint8_t *sc, const float *x, float *out, int64_t O, int64_t B,
                       float *scratch, int wide) {
    float *xe = scratch, *xo = scratch + B * 16;
    split(x, xe, xo, B);
#ifdef __x86_64__
    if (wide == SIMD_AVX512) {
        rows_avx512(bl, sc, xe, xo, out, 0, O, B);
        return;
    }
    if (wide == SIMD_AVX2) {
        rows_avx2(bl, sc, xe, xo, out, 0, O, B);
        return;
    }
#endif
    (void)wide;
    rows_scalar(bl, sc, xe, xo, out, 0, O, B);
}

/* blocks (E, O, B, 16), scales (E, O, B), ids (R,) int64, x (R, B*32) float32, out (R, O) float32,
   scratch (32 * B) float32; simd: the cap of common.h's use_simd (tests force each path). Returns 0, or -1 when an
   id is outside [0, E) (checked before any row is written). */
int mxfp4_routed_matvec(const uint8_t *blocks, const uint8_t *scales, const int64_t *ids, const float *x,
                        float *out, float *scratch, int64_t R, int64_t E, int64_t O, int64_t B, int simd) {
    for (int64_t r = 0; r < R; r++)
        if (ids[r] < 0 || ids[r] >= E) return -1;
    int wide = use_simd(simd);
    for (int64_t r = 0; r < R; r++)
        matvec_one(blocks + ids[r] * O * B * 16, scales + ids[r] * O * B, x + r * B * 32, out + r * O, O, B,
                   scratch, wide);
    return 0;
}

/* The whole MoE of a few tokens, float32 (moe.py's op for decode on CPU; its *_ref is the torch op):
   out[n] = sum_a weights[n, a] * (W2_e @ swiglu(W1_e @ x[n] + b1_e) + b2_e), e = ids[n, a].
   w1 (E, 2I, C/32, 16) + scales, b1 (E, 2I); w2 (E, C, I/32, 16) + scales, b2 (E, C); biases float32 or bf16
   (bias_bf16). SwiGLU quirks as in moe.py: rows of mlp1 interleave gate (even) and linear (odd); gate clamped
   above only, linear both ways; gate * sigmoid(alpha * gate) * (linear + 1).
   scratch: max(C, I) + 4 * I + C floats. Returns 0, or -1 when an id is outside [0, E). */
int mxfp4_moe_decode(const uint8_t *w1b, const uint8_t *w1s, const void *b1, const uint8_t *w2b,
                     const uint8_t *w2s, const void *b2, int bias_bf16, const int32_t *ids, const float *weights,
                     const float *x, float *out, float *scratch, int64_t N, int64_t A, int64_t E, int64_t I,
                     int64_t C, float limit, float alpha, int simd) {
    for (int64_t r = 0; r < N * A; r++)
        if (ids[r] < 0 || ids[r] >= E) return -1;
    int wide = use_simd(simd);
    int64_t B1 = C / 32, B2 = I / 32, Bmax = B1 > B2 ? B1 : B2;
    float *h = scratch + 32 * Bmax, *act = h + 2 * I, *y = act + I;
    for (int64_t n = 0; n < N; n++) {
        float *o = out + n * C;
        for (int64_t c = 0; c < C; c++) o[c] = 0.0f;
        for (int64_t a = 0; a < A; a++) {
            int64_t e = ids[n * A + a];
            matvec_one(w1b + e * 2 * I * B1 * 16, w1s + e * 2 * I * B1, x + n * C, h, 2 * I, B1, scratch, wide);
            for (int64_t i = 0; i < I; i++) {
                float gate = h[2 * i] + load_f(b1, e * 2 * I + 2 * i, bias_bf16);
                float lin = h[2 * i + 1] + load_f(b1, e * 2 * I + 2 * i + 1, bias_bf16);
                gate = gate > limit ? limit : gate;  /* quirk: clamped above only */
                lin = lin > limit ? limit : (lin < -limit ? -limit : lin);
                act[i] = gate / (1.0f + expf(-alpha * gate)) * (lin + 1.0f);  /* quirk: +1 on the linear half */
            }
            matvec_one(w2b + e * C * B2 * 16, w2s + e * C * B2, act, y, C, B2, scratch, wide);
            float wgt = weights[n * A + a];
            for (int64_t c = 0; c < C; c++) o[c] += wgt * (y[c] + load_f(b2, e * C + c, bias_bf16));
        }
    }
    return 0;
}

/* the vector path these kernels (and mxfp4_matmul.c's) take at this cap: common.h's SIMD_* */
int mxfp4_simd(int cap) { return use_simd(cap); }
