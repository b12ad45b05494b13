/* Helpers the CPU kernels share: bf16 <-> float32, the FP4 E2M1 and E8M0 decodings, the AVX-512 check and a
   vectorized exp. Included by each kernel source in csrc/; cbuild.py hashes it into every kernel's build key.
   Layout facts (the release's): FP4 codes 0-7 are +0, 0.5, 1, 1.5, 2, 3, 4, 6 and 8-15 their negatives; an
   E8M0 scale byte s is 2**(s - 127), s = 0 the subnormal 2**-127 (0xFF, NaN, is refused by the loader). */
#ifndef GPT_OSS_KIT_CSRC_COMMON_H
#define GPT_OSS_KIT_CSRC_COMMON_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __x86_64__
#include <immintrin.h>
#endif

/* How far ahead of a streamed row the matvec kernels prefetch (prefetches never fault past the end). Measured on
   a 32768x768 bf16 matrix, one core, cold: 8 KB ahead 12.1 GB/s (torch.mv on the float32 copy: 11.7), 2 KB 10.6,
   16 KB 11.7, a burst per 4-row group two groups ahead 9.3, none 7.4. */
#define PREFETCH_BYTES 8192

/* bf16 bits -> float32: exact (bf16 is float32's high half) */
static inline float widen(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* element i of a float32 array, or of a bf16 one (bf16 != 0), as float32 */
static inline float load_f(const void *p, int64_t i, int bf16) {
    return bf16 ? widen(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* float32 -> bf16 bits, rounded to nearest even as torch's cast; a NaN stays a quiet NaN */
static inline uint16_t round_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

static const float FP4[16] __attribute__((unused)) = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                                      -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

static inline float e8m0(uint8_t s) {
    uint32_t bits = s == 0 ? (1u << 22) : ((uint32_t)s << 23);  /* s is float32's exponent field (bias 127) */
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Q8_0, the int8 activations of the classes "+int8" (golden/activations.py's q8_0; ggml's quantize_row_q8_0_ref,
   llama.cpp's vec_dot_type for MXFP4): per block of 32, d = amax / 127 stored as float16, q = round(x * (1 / d))
   (ggml's roundf: half away from zero) with the unrounded d; the value is float16(d) * q, exact in float32. */
static inline float round_fp16(float f) {  /* the nearest float16 value as float32, ties to even; 65520 up: inf */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t a = bits & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) return f;  /* inf, nan */
    if (a < 0x38800000u) return rintf(f * 16777216.0f) / 16777216.0f;  /* float16 subnormals: multiples of 2**-24 */
    a = (a + 0xFFFu + ((a >> 13) & 1u)) & ~0x1FFFu;  /* 10 mantissa bits */
    if (a >= 0x47800000u) a = 0x7F800000u;  /* 65520 and up round to 65536: float16 overflows */
    bits = (bits & 0x80000000u) | a;
    memcpy(&f, &bits, 4);
    return f;
}
static inline float q8_0_block(const float *x, int8_t *q) {  /* -> d (a float16 value); q (32) */
    float amax = 0.0f;
    int finite = 1;
    for (int j = 0; j < 32; j++) {
        finite &= fabsf(x[j]) <= 3.402823466e38f;
        amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    }
    if (!finite) {  /* a NaN or inf poisons its block (as golden's amax does): d NaN, q 0 */
        memset(q, 0, 32);
        return NAN;
    }
    float d = amax / 127.0f, dh = round_fp16(d);
    if (dh == 0.0f || dh > 65504.0f) {  /* d under float16's least subnormal: every value is 0 (golden's too); an
        amax of ~8.3e6 and up overflows float16: the block is poisoned (golden's values are then inf or NaN) */
        memset(q, 0, 32);
        return dh == 0.0f ? 0.0f : NAN;
    }
    float id = 1.0f / d;  /* finite: d >= 2**-25 */
    for (int j = 0; j < 32; j++) {  /* roundf(v) without its libm call: the same for every float below 128 */
        float v = x[j] * id, f = v - (float)(int32_t)v;
        q[j] = (int8_t)((int32_t)v + (f >= 0.5f) - (f <= -0.5f));
    }
    return dh;
}
static inline void q8_0_round(float *v, int64_t K) {  /* v (K, a multiple of 32) -> its Q8_0 values, in place */
    int8_t q[32];
    for (int64_t b = 0; b < K; b += 32) {
        float d = q8_0_block(v + b, q);
        for (int j = 0; j < 32; j++) v[b + j] = d * (float)q[j];
    }
}

/* Which vector paths run: SIMD_AVX512 (AVX-512F), SIMD_AVX2 (AVX2 + FMA: CPUs without AVX-512, e.g. AMD Zen 1-3)
   or SIMD_NONE (scalar loops): the best the CPU reports (cpuid) at or below `cap`, the callers' simd argument
   (the engine passes SIMD_AVX512; tests force each level) */
enum { SIMD_NONE, SIMD_AVX2, SIMD_AVX512 };
static inline int use_simd(int cap) {
#ifdef __x86_64__
    __builtin_cpu_init();
    if (cap >= SIMD_AVX512 && __builtin_cpu_supports("avx512f")) return SIMD_AVX512;
    if (cap >= SIMD_AVX2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SIMD_AVX2;
#endif
    (void)cap;
    return SIMD_NONE;
}

#ifdef __x86_64__
/* AVX2 FP4 decoding, 8 codes a register: a code's low 3 bits pick its magnitude (vpermps reads only those) and
   bit 3 is its sign, which (code << 28) puts in bit 31, with the 3 magnitude bits in bits 28-30; so the table
   holds each magnitude's float32 bits XOR (m << 28), and one XOR with (code << 28) both cancels those and sets
   the sign. Bits 4-31 of a lane are ignored (shifted out). */
static const uint32_t FP4_XOR28[8] __attribute__((unused)) = {0x0, 0x2f000000, 0x1f800000, 0x0fc00000,
                                                              0x0, 0x10400000, 0x20800000, 0x30c00000};
__attribute__((target("avx2")))
static inline __m256 fp4_avx2(__m256i codes, __m256 table) {
    return _mm256_xor_ps(_mm256_permutevar8x32_ps(table, codes), _mm256_castsi256_ps(_mm256_slli_epi32(codes, 28)));
}
#endif

#ifdef __x86_64__
/* blocks b, b+1's scales (float32, at sf) in lanes 0-3 and 4-7 */
#define PAIR_SCALE_AVX2(sf) _mm256_blend_ps(_mm256_broadcast_ss(sf), _mm256_broadcast_ss((sf) + 1), 0xF0)

/* n E8M0 bytes -> float32 powers of two (scale 0: the subnormal 2**-127), 8 at a time */
__attribute__((target("avx2")))
static inline void scales_avx2(const uint8_t *s, float *f, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s + i)));
        __m256i zero = _mm256_cmpeq_epi32(e, _mm256_setzero_si256());
        __m256i bits = _mm256_blendv_epi8(_mm256_slli_epi32(e, 23), _mm256_set1_epi32(1 << 22), zero);
        _mm256_storeu_si256((__m256i *)(f + i), bits);
    }
    for (; i < n; i++) f[i] = e8m0(s[i]);
}

/* the high 256 bits of v (the low ones: _mm512_castps512_ps256) */
__attribute__((target("avx512f")))
static inline __m256 high256_ps(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }

/* the sum of v's 8 lanes, always in the same order */
__attribute__((target("avx2,fma")))
static inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

#endif

#ifdef __x86_64__
/* float32 exp(x) to about 1 ulp (Cephes expf): 2**n * exp(r), n = round(x / ln 2), |r| <= ln 2 / 2; a very
   negative x underflows to 0, a large one overflows to inf (_mm512_scalef_ps) */
__attribute__((target("avx512f")))
static inline __m512 exp_avx512(__m512 x) {
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  /* ln 2 in two parts: n * hi is exact */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}
#endif

#endif
