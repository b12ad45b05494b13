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
AVX-512): two blocks a register, codes to bf16 bytes by table lookups (vpshufb), widened as bf16 (rows_avx2).
Int8 activations (q8: the classes "+int8", opt-in): x in Q8_0 and integer block dots (rows_q8_vnni on AVX-512
CPUs with VNNI, rows_q8_avx2 on the other x86 vector levels: the same bits), or scalar. A scalar path serves other
CPUs; all sum in float32.
Legend: R routed rows, E experts, O output rows, B blocks of 32 along k.
*/
#include "q8.h"

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

/* rows split over OpenMP threads (static, contiguous runs) from this many 32-blocks (~0.3 MB packed) up */
#define PARALLEL_MIN_BLOCKS (1 << 14)
#ifdef _OPENMP
#include <omp.h>
static inline int thread_id(void) { return omp_get_thread_num(); }
static inline int threads(void) { return omp_get_num_threads(); }
#else
static inline int thread_id(void) { return 0; }
static inline int threads(void) { return 1; }
#endif
/* where thread t of T starts in O rows: shares of whole 4-row groups (the kernels' grouping), t = T gives O */
static inline int64_t share(int64_t O, int t, int T) {
    int64_t g = (O + 3) / 4 * t / T * 4;
    return g < O ? g : O;
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

__attribute__((target("avx512f")))
static void rows_avx512(const uint8_t *bl, const uint8_t *sc, const float *xe, const float *xo, float *out,
                        int64_t o0, int64_t o1, int64_t B, int par) {
    (void)par;  /* without OpenMP */
    const __m512 table = _mm512_loadu_ps(FP4);
    int64_t o4 = o0 + (o1 - o0) / 4 * 4;
#pragma omp parallel for schedule(static) if (par && (o1 - o0) * B >= PARALLEL_MIN_BLOCKS)
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

/* AVX2 (CPUs without AVX-512): two blocks (32 bytes, one register: block b in the low 128-bit lane, b+1 in the
   high) a step. FP4 values are bf16 numbers with a zero low mantissa byte, so two in-lane table lookups (vpshufb on
   the nibbles) give a code's bf16 high and low bytes, an interleave makes the bf16 words, and (word << 16) or
   (word & 0xFFFF0000) widens them exactly to float32, as bf16_matvec.c widens weights: ~1 uop a code against ~3 of
   a per-code permute. The decode leaves the 64 values in an order of its own; x is permuted once per matvec to
   match (permute_pairs). Products and sums in float32, the block's scale applied to its unscaled sum. */
static const uint8_t FP4_BF16_LO[16] = {0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0,
                                        0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0};
static const uint8_t FP4_BF16_HI[16] = {0x00, 0x3F, 0x3F, 0x3F, 0x40, 0x40, 0x40, 0x40,
                                        0x80, 0xBF, 0xBF, 0xBF, 0xC0, 0xC0, 0xC0, 0xC0};
/* Vector i of a pair's decode holds, in lanes 0-3, the elements PAIR_OFFSET[i] + 4l (l = 0..3) of block b and in
   lanes 4-7 the same of block b+1: i = 0-3 come from the low nibbles (even k), 4-7 from the high ones (odd k). */
static const int PAIR_OFFSET[8] = {0, 2, 16, 18, 1, 3, 17, 19};

/* x (B*32) -> xp: each pair of blocks' 64 elements as the 8 vectors of its decode (the last block of an odd B
   stays in x) */
static void permute_pairs(const float *x, float *xp, int64_t B) {
    for (int64_t b = 0; b + 1 < B; b += 2)
        for (int i = 0; i < 8; i++)
            for (int l = 0; l < 8; l++) xp[b * 32 + i * 8 + l] = x[(b + l / 4) * 32 + PAIR_OFFSET[i] + 4 * (l % 4)];
}

/* one row's blocks b, b+1 (32 bytes at ptr): their unscaled dot products with x (xq: the pair's 64 permuted
   elements), block b's in lanes 0-3 and b+1's in lanes 4-7 */
#define PAIR_DOT_AVX2(ptr, xq)                                                                                 \
    ({                                                                                                        \
        __m256i v_ = _mm256_loadu_si256((const __m256i *)(ptr));                                              \
        __m256i lo_ = _mm256_and_si256(v_, nib), hi_ = _mm256_and_si256(_mm256_srli_epi16(v_, 4), nib);      \
        __m256i ll_ = _mm256_shuffle_epi8(tlo, lo_), lh_ = _mm256_shuffle_epi8(thi, lo_);                     \
        __m256i hl_ = _mm256_shuffle_epi8(tlo, hi_), hh_ = _mm256_shuffle_epi8(thi, hi_);                     \
        __m256i w0_ = _mm256_unpacklo_epi8(ll_, lh_), w1_ = _mm256_unpackhi_epi8(ll_, lh_);                   \
        __m256i w2_ = _mm256_unpacklo_epi8(hl_, hh_), w3_ = _mm256_unpackhi_epi8(hl_, hh_);                   \
        __m256 d_ = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w0_, 16)), _mm256_loadu_ps(xq));      \
        __m256 e_ = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w2_, 16)), _mm256_loadu_ps((xq) + 32)); \
        d_ = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w0_, top)), _mm256_loadu_ps((xq) + 8), d_);  \
        e_ = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w2_, top)), _mm256_loadu_ps((xq) + 40), e_); \
        d_ = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w1_, 16)), _mm256_loadu_ps((xq) + 16), d_); \
        e_ = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w3_, 16)), _mm256_loadu_ps((xq) + 48), e_); \
        d_ = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w1_, top)), _mm256_loadu_ps((xq) + 24), d_); \
        e_ = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w3_, top)), _mm256_loadu_ps((xq) + 56), e_); \
        _mm256_add_ps(d_, e_); /* two chains of four: a pair's sum in half the latency */                    \
    })

/* the last block of an odd B, scalar, against x in its own order */
static float last_block(const uint8_t *p, float scale, const float *x) {
    float part = 0.0f;
    for (int j = 0; j < 16; j++) part += FP4[p[j] & 15] * x[2 * j] + FP4[p[j] >> 4] * x[2 * j + 1];
    return part * scale;
}

__attribute__((target("avx2,fma")))
static void rows_avx2(const uint8_t *bl, const uint8_t *sc, const float *x, const float *xp, float *out, int64_t o0,
                      int64_t o1, int64_t B, int par) {
    (void)par;  /* without OpenMP */
    const __m256i nib = _mm256_set1_epi8(0x0F), top = _mm256_set1_epi32((int)0xFFFF0000u);
    const __m256i tlo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)FP4_BF16_LO));
    const __m256i thi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)FP4_BF16_HI));
    const int64_t B2 = B / 2 * 2, o4 = o0 + (o1 - o0) / 4 * 4;
#pragma omp parallel for schedule(static) if (par && (o1 - o0) * B >= PARALLEL_MIN_BLOCKS)
    for (int64_t o = o0; o < o4; o += 4) {  /* four rows at once, as rows_avx512 */
        const uint8_t *p = bl + o * B * 16;
        float sf[4 * B];  /* the 4 rows' scales as float32 (contiguous rows: one run of 4B bytes) */
        scales_avx2(sc + o * B, sf, 4 * B);
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t b = 0; b < B2; b += 2) {
            if ((b & 3) == 0)  /* a line of each of the 4 rows every 4 blocks, PREFETCH_BYTES ahead */
                for (int r = 0; r < 4; r++)
                    _mm_prefetch((const char *)(p + (r * B + b) * 16) + PREFETCH_BYTES, _MM_HINT_T0);
            const float *xq = xp + b * 32;
            a0 = _mm256_fmadd_ps(PAIR_DOT_AVX2(p + b * 16, xq), PAIR_SCALE_AVX2(sf + b), a0);
            a1 = _mm256_fmadd_ps(PAIR_DOT_AVX2(p + (B + b) * 16, xq), PAIR_SCALE_AVX2(sf + B + b), a1);
            a2 = _mm256_fmadd_ps(PAIR_DOT_AVX2(p + (2 * B + b) * 16, xq), PAIR_SCALE_AVX2(sf + 2 * B + b), a2);
            a3 = _mm256_fmadd_ps(PAIR_DOT_AVX2(p + (3 * B + b) * 16, xq), PAIR_SCALE_AVX2(sf + 3 * B + b), a3);
        }
        __m256 acc[4] = {a0, a1, a2, a3};
        for (int r = 0; r < 4; r++)
            out[o + r] = hsum_avx2(acc[r]) +
                         (B2 < B ? last_block(p + (r * B + B2) * 16, sf[r * B + B2], x + B2 * 32) : 0.0f);
    }
    for (int64_t o = o4; o < o1; o++) {
        const uint8_t *p = bl + o * B * 16;
        float sf[B];
        scales_avx2(sc + o * B, sf, B);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < B2; b += 2)
            acc = _mm256_fmadd_ps(PAIR_DOT_AVX2(p + b * 16, xp + b * 32), PAIR_SCALE_AVX2(sf + b), acc);
        out[o] = hsum_avx2(acc) + (B2 < B ? last_block(p + B2 * 16, sf[B2], x + B2 * 32) : 0.0f);
    }
}
#endif

/* Int8 activations (the classes "+int8", llama.cpp's MXFP4 dot): x prepared by q8.h's q8_prepare, each block's
   dot exact in int32, then scaled by the weights' E8M0 scale * d / 2. */
static void rows_q8_scalar(const uint8_t *bl, const uint8_t *sc, const float *prep, float *out, int64_t o0,
                           int64_t o1, int64_t B) {
    const float *d = prep + 4 * B;
    const int8_t *q = (const int8_t *)(prep + 5 * B);
    for (int64_t o = o0; o < o1; o++) {
        float acc = 0.0f;
        for (int64_t b = 0; b < B; b++)
            acc += block_q8(bl + (o * B + b) * 16, q + b * 32, e8m0(sc[o * B + b]) * 0.5f * d[b]);
        out[o] = acc;
    }
}

#ifdef __x86_64__
/* one row's blocks b, b+1 (32 bytes at ptr) against the pair's q (xe: even elements, xo: odd): the int32 sums of
   each 8 products, as float32 (exact: |sum| <= 8 * 12 * 127), block b's in lanes 0-3, b+1's in 4-7. vpmaddubsw
   multiplies unsigned by signed bytes: |w| times q with w's sign (vpsignb), pairs summed in int16 (<= 3048). */
#define PAIR_DOT_Q8_AVX2(ptr, xe, xo)                                                                          \
    ({                                                                                                        \
        __m256i v_ = _mm256_loadu_si256((const __m256i *)(ptr));                                              \
        __m256i wl_ = _mm256_shuffle_epi8(kv, _mm256_and_si256(v_, nib));                                     \
        __m256i wh_ = _mm256_shuffle_epi8(kv, _mm256_and_si256(_mm256_srli_epi16(v_, 4), nib));               \
        __m256i s_ = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wl_, wl_), _mm256_sign_epi8(xe, wl_)), \
                                      _mm256_maddubs_epi16(_mm256_sign_epi8(wh_, wh_), _mm256_sign_epi8(xo, wh_))); \
        _mm256_cvtepi32_ps(_mm256_madd_epi16(s_, ones));                                                      \
    })

/* one row (its B blocks' bytes p and scale bytes s) against a prepared x: the 4-row loop below for one row */
__attribute__((target("avx2,fma")))
static float row_q8_avx2(const uint8_t *p, const uint8_t *s, const float *prep, int64_t B) {
    const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256i kv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)FP4_X2));
    const float *dv = prep;
    const int8_t *q = (const int8_t *)(prep + 5 * B);
    const int64_t B2 = B / 2 * 2;
    float sf[B];
    scales_avx2(s, sf, B);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < B2; b += 2) {
        __m256i xe = _mm256_loadu_si256((const __m256i *)(q + b * 32));
        __m256i xo = _mm256_loadu_si256((const __m256i *)(q + b * 32 + 32));
        acc = _mm256_fmadd_ps(PAIR_DOT_Q8_AVX2(p + b * 16, xe, xo),
                              _mm256_mul_ps(_mm256_loadu_ps(dv + b * 4), PAIR_SCALE_AVX2(sf + b)), acc);
    }
    return q8_row_total(acc, p, sf, prep, B);
}

__attribute__((target("avx2,fma")))
static void rows_q8_avx2(const uint8_t *bl, const uint8_t *sc, const float *prep, float *out, int64_t o0, int64_t o1,
                         int64_t B, int par) {
    (void)par;  /* without OpenMP */
    const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256i kv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)FP4_X2));
    const float *dv = prep;
    const int8_t *q = (const int8_t *)(prep + 5 * B);
    const int64_t B2 = B / 2 * 2, o4 = o0 + (o1 - o0) / 4 * 4;
#pragma omp parallel for schedule(static) if (par && (o1 - o0) * B >= PARALLEL_MIN_BLOCKS)
    for (int64_t o = o0; o < o4; o += 4) {  /* four rows at once, q loaded once a pair */
        const uint8_t *p = bl + o * B * 16;
        float sf[4 * B];
        scales_avx2(sc + o * B, sf, 4 * B);
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t b = 0; b < B2; b += 2) {
            if ((b & 3) == 0)
                for (int r = 0; r < 4; r++)
                    _mm_prefetch((const char *)(p + (r * B + b) * 16) + PREFETCH_BYTES, _MM_HINT_T0);
            __m256i xe = _mm256_loadu_si256((const __m256i *)(q + b * 32));
            __m256i xo = _mm256_loadu_si256((const __m256i *)(q + b * 32 + 32));
            __m256 dq = _mm256_loadu_ps(dv + b * 4);
            a0 = _mm256_fmadd_ps(PAIR_DOT_Q8_AVX2(p + b * 16, xe, xo), _mm256_mul_ps(dq, PAIR_SCALE_AVX2(sf + b)), a0);
            a1 = _mm256_fmadd_ps(PAIR_DOT_Q8_AVX2(p + (B + b) * 16, xe, xo),
                                 _mm256_mul_ps(dq, PAIR_SCALE_AVX2(sf + B + b)), a1);
            a2 = _mm256_fmadd_ps(PAIR_DOT_Q8_AVX2(p + (2 * B + b) * 16, xe, xo),
                                 _mm256_mul_ps(dq, PAIR_SCALE_AVX2(sf + 2 * B + b)), a2);
            a3 = _mm256_fmadd_ps(PAIR_DOT_Q8_AVX2(p + (3 * B + b) * 16, xe, xo),
                                 _mm256_mul_ps(dq, PAIR_SCALE_AVX2(sf + 3 * B + b)), a3);
        }
        __m256 acc[4] = {a0, a1, a2, a3};
        for (int r = 0; r < 4; r++) out[o + r] = q8_row_total(acc[r], p + r * B * 16, sf + r * B, prep, B);
    }
    for (int64_t o = o4; o < o1; o++) out[o] = row_q8_avx2(bl + o * B * 16, sc + o * B, prep, B);
}
#endif

#ifdef __x86_64__
/* AVX-512 with VNNI (vpdpbusd: 4 byte products summed into an int32 lane, one instruction): two rows a register,
   each in the AVX2 kernel's lanes (row r in the low 256 bits, r+1 in the high ones), x's pair broadcast to both
   halves. vpdpbusd multiplies unsigned by signed bytes: the weights offset by 12 (FP4_X2 + 12: 0..24) times q, and
   12 * (the sum of the same 4 q) taken off in int32 (exact), so each lane holds rows_q8_avx2's int32 sum and each
   row's float32 sums run in its order: the two kernels give the same bits (tests/test_optimized_int8.py). */
static const uint8_t FP4_X2_OFF[16] = {12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0};

/* rows r, r+1's blocks b, b+1 (v: 32 bytes each) against x's pair (xe2, xo2 broadcast; c2 its 12 * sums) */
#define QUAD_DOT_Q8_VNNI(v, xe2, xo2, c2)                                                                       \
    _mm512_cvtepi32_ps(_mm512_sub_epi32(                                                                        \
        _mm512_dpbusd_epi32(                                                                                    \
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(kv, _mm512_and_si512(v, nib)), xe2), \
            _mm512_shuffle_epi8(kv, _mm512_and_si512(_mm512_srli_epi16(v, 4), nib)), xo2),                      \
        c2))

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
static void rows_q8_vnni(const uint8_t *bl, const uint8_t *sc, const float *prep, float *out, int64_t o0, int64_t o1,
                         int64_t B, int par) {
    (void)par;  /* without OpenMP */
    const __m512i nib = _mm512_set1_epi8(0x0F);
    const __m512i kv = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)FP4_X2_OFF));
    const __m256i twelve = _mm256_set1_epi8(12);
    const __m512i i01 = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5);
    const __m512i i23 = _mm512_setr_epi32(2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7);
    const float *dv = prep;
    const int8_t *q = (const int8_t *)(prep + 5 * B);
    const int64_t B2 = B / 2 * 2, o4 = o0 + (o1 - o0) / 4 * 4;
#pragma omp parallel for schedule(static) if (par && (o1 - o0) * B >= PARALLEL_MIN_BLOCKS)
    for (int64_t o = o0; o < o4; o += 4) {
        const uint8_t *p = bl + o * B * 16;
        float sf[4 * B], st[4 * B];  /* the 4 rows' scales, and by block: st[b * 4 + r] */
        scales_avx2(sc + o * B, sf, 4 * B);
        for (int64_t b = 0; b < B; b++)
            for (int r = 0; r < 4; r++) st[b * 4 + r] = sf[r * B + b];
        __m512 a01 = _mm512_setzero_ps(), a23 = _mm512_setzero_ps();
        for (int64_t b = 0; b < B2; b += 2) {
            if ((b & 3) == 0)
                for (int r = 0; r < 4; r++)
                    _mm_prefetch((const char *)(p + (r * B + b) * 16) + PREFETCH_BYTES, _MM_HINT_T0);
            __m256i xe = _mm256_loadu_si256((const __m256i *)(q + b * 32));
            __m256i xo = _mm256_loadu_si256((const __m256i *)(q + b * 32 + 32));
            __m512i c2 = _mm512_broadcast_i64x4(_mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                                                                        twelve, xe), twelve, xo));
            __m512i xe2 = _mm512_broadcast_i64x4(xe), xo2 = _mm512_broadcast_i64x4(xo);
            __m512 dq = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(dv + b * 4))));
            __m512 s8 = _mm512_castps256_ps512(_mm256_loadu_ps(st + b * 4));  /* s0..s3 of b, then of b+1 */
            __m512i v01 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + b * 16))),
                                             _mm256_loadu_si256((const __m256i *)(p + (B + b) * 16)), 1);
            __m512i v23 = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + (2 * B + b) * 16))),
                _mm256_loadu_si256((const __m256i *)(p + (3 * B + b) * 16)), 1);
            a01 = _mm512_fmadd_ps(QUAD_DOT_Q8_VNNI(v01, xe2, xo2, c2),
                                  _mm512_mul_ps(dq, _mm512_permutexvar_ps(i01, s8)), a01);
            a23 = _mm512_fmadd_ps(QUAD_DOT_Q8_VNNI(v23, xe2, xo2, c2),
                                  _mm512_mul_ps(dq, _mm512_permutexvar_ps(i23, s8)), a23);
        }
        __m256 acc[4] = {_mm512_castps512_ps256(a01), high256_ps(a01), _mm512_castps512_ps256(a23), high256_ps(a23)};
        for (int r = 0; r < 4; r++) out[o + r] = q8_row_total(acc[r], p + r * B * 16, sf + r * B, prep, B);
    }
    for (int64_t o = o4; o < o1; o++) out[o] = row_q8_avx2(bl + o * B * 16, sc + o * B, prep, B);
}
#endif

/* x (B*32) -> its prepared form xp for matvec_rows (PREP_FLOATS(B) floats): Q8_0 (q8.h's layout) with q8; else
   the AVX2 kernel's pair order (permute_pairs), or even and odd halves (split) */
#define PREP_FLOATS(B) (32 * (B))  /* >= Q8_FLOATS(B) */
static void prepare_x(const float *x, float *xp, int64_t B, int wide, int q8) {
    if (q8)
        q8_prepare(x, xp, B, wide != SIMD_NONE);
#ifdef __x86_64__
    else if (wide == SIMD_AVX2)
        permute_pairs(x, xp, B);
#endif
    else
        split(x, xp, xp + B * 16, B);
}

/* rows [o0, o1) of one packed matrix (O, B, 16) + scales (O, B) times x (B*32; xp its prepare_x form) -> out[o0:o1];
   par: the rows over the OpenMP threads (0 inside a parallel region) */
static void matvec_rows(const uint8_t *bl, const uint8_t *sc, const float *x, const float *xp, float *out, int64_t o0,
                        int64_t o1, int64_t B, int wide, int q8, int par) {
#ifdef __x86_64__
    if (q8 && q8_vnni(wide)) {
        rows_q8_vnni(bl, sc, xp, out, o0, o1, B, par);
        return;
    }
    if (q8 && wide != SIMD_NONE) {  /* AVX-512 CPUs without VNNI have AVX2: the same kernel */
        rows_q8_avx2(bl, sc, xp, out, o0, o1, B, par);
        return;
    }
    if (!q8 && wide == SIMD_AVX2) {
        rows_avx2(bl, sc, x, xp, out, o0, o1, B, par);
        return;
    }
    if (!q8 && wide == SIMD_AVX512) {
        rows_avx512(bl, sc, xp, xp + B * 16, out, o0, o1, B, par);
        return;
    }
#endif
    (void)x, (void)par;
    if (q8)
        rows_q8_scalar(bl, sc, xp, out, o0, o1, B);
    else
        rows_scalar(bl, sc, xp, xp + B * 16, out, o0, o1, B);
}

/* blocks (E, O, B, 16), scales (E, O, B), ids (R,) int64, x (R, B*32) float32, out (R, O) float32,
   scratch (32 * B) float32; q8: x in Q8_0 (the int8 kernels); simd: the cap of common.h's use_simd (tests force
   each path). Returns 0, or -1 when an
   id is outside [0, E) (checked before any row is written). */
int mxfp4_routed_matvec(const uint8_t *blocks, const uint8_t *scales, const int64_t *ids, const float *x,
                        float *out, float *scratch, int64_t R, int64_t E, int64_t O, int64_t B, int q8, int simd) {
    for (int64_t r = 0; r < R; r++)
        if (ids[r] < 0 || ids[r] >= E) return -1;
    int wide = use_simd(simd);
    for (int64_t r = 0; r < R; r++) {
        const uint8_t *bl = blocks + ids[r] * O * B * 16, *sc = scales + ids[r] * O * B;
        prepare_x(x + r * B * 32, scratch, B, wide, q8);
        matvec_rows(bl, sc, x + r * B * 32, scratch, out + r * O, 0, O, B, wide, q8, 1);
    }
    return 0;
}

/* The whole MoE of a few tokens, float32 (moe.py's op for decode on CPU; its *_ref is the torch op):
   out[n] = sum_a weights[n, a] * (W2_e @ swiglu(W1_e @ x[n] + b1_e) + b2_e), e = ids[n, a].
   w1 (E, 2I, C/32, 16) + scales, b1 (E, 2I); w2 (E, C, I/32, 16) + scales, b2 (E, C); biases float32 or bf16
   (bias_bf16). SwiGLU quirks as in moe.py: rows of mlp1 interleave gate (even) and linear (odd); gate clamped
   above only, linear both ways; gate * sigmoid(alpha * gate) * (linear + 1).
   q8: x and the SwiGLU output in Q8_0 before the matvecs (the int8 kernels: the classes "+int8").
   scratch: C + A * (4I + C) floats. One OpenMP region a token: the threads share every expert's rows (a share a
   multiple of 4 rows: each row's sums are the serial kernel's), against one region per matvec before (8 a layer,
   each a fork and a join). Returns 0, or -1 when an id is outside [0, E). */
int mxfp4_moe_decode(const uint8_t *w1b, const uint8_t *w1s, const void *b1, const uint8_t *w2b,
                     const uint8_t *w2s, const void *b2, int bias_bf16, const int32_t *ids, const float *weights,
                     const float *x, float *out, float *scratch, int64_t N, int64_t A, int64_t E, int64_t I,
                     int64_t C, float limit, float alpha, int q8, int simd) {
    for (int64_t r = 0; r < N * A; r++)
        if (ids[r] < 0 || ids[r] >= E) return -1;
    int wide = use_simd(simd);
    int64_t B1 = C / 32, B2 = I / 32;
    float *xp = scratch, *ap = xp + PREP_FLOATS(B1), *h = ap + A * PREP_FLOATS(B2), *act = h + A * 2 * I;
    float *y = act + A * I;
    for (int64_t n = 0; n < N; n++) {
        const int32_t *e = ids + n * A;
        prepare_x(x + n * C, xp, B1, wide, q8);  /* once for the token's A experts */
#pragma omp parallel if (A * 2 * I * B1 >= PARALLEL_MIN_BLOCKS)
        {
            int t = thread_id(), T = threads();
            for (int64_t a = 0; a < A; a++)  /* mlp1 of every expert: each thread a share of each one's rows */
                matvec_rows(w1b + e[a] * 2 * I * B1 * 16, w1s + e[a] * 2 * I * B1, x + n * C, xp, h + a * 2 * I,
                            share(2 * I, t, T), share(2 * I, t + 1, T), B1, wide, q8, 0);
#pragma omp barrier
            for (int64_t a = t; a < A; a += T) {  /* SwiGLU and mlp2's prepared input: an expert a thread */
                const float *ha = h + a * 2 * I;
                float *aa = act + a * I;
                for (int64_t i = 0; i < I; i++) {
                    float gate = ha[2 * i] + load_f(b1, e[a] * 2 * I + 2 * i, bias_bf16);
                    float lin = ha[2 * i + 1] + load_f(b1, e[a] * 2 * I + 2 * i + 1, bias_bf16);
                    gate = gate > limit ? limit : gate;  /* quirk: clamped above only */
                    lin = lin > limit ? limit : (lin < -limit ? -limit : lin);
                    aa[i] = gate / (1.0f + expf(-alpha * gate)) * (lin + 1.0f);  /* quirk: +1 on the linear half */
                }
                prepare_x(aa, ap + a * PREP_FLOATS(B2), B2, wide, q8);
            }
#pragma omp barrier
            for (int64_t a = 0; a < A; a++)  /* mlp2 the same way */
                matvec_rows(w2b + e[a] * C * B2 * 16, w2s + e[a] * C * B2, act + a * I, ap + a * PREP_FLOATS(B2),
                            y + a * C, share(C, t, T), share(C, t + 1, T), B2, wide, q8, 0);
        }
        float *o = out + n * C;
        for (int64_t c = 0; c < C; c++) o[c] = 0.0f;
        for (int64_t a = 0; a < A; a++) {  /* in the experts' order: the same sums whatever the threads */
            float wgt = weights[n * A + a];
            for (int64_t c = 0; c < C; c++) o[c] += wgt * (y[a * C + c] + load_f(b2, e[a] * C + c, bias_bf16));
        }
    }
    return 0;
}

/* the vector path these kernels (and mxfp4_matmul.c's) take at this cap: common.h's SIMD_* */
int mxfp4_simd(int cap) { return use_simd(cap); }

/* the int8 dots these kernels (and mxfp4_matmul.c's) take at this cap: 2 AVX-512 VNNI, 1 AVX2, 0 scalar */
int mxfp4_q8_level(int cap) {
    int wide = use_simd(cap);
    return q8_vnni(wide) ? 2 : wide != SIMD_NONE;
}
