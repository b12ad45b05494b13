/* The MoE of many tokens (prefill) on CPU, straight from the packed MXFP4 bytes: mxfp4_moe_prefill.

Built and loaded by optimized/mxfp4_cpu.py (gcc, no torch headers); its *_ref is the torch op (optimized/moe.py,
expert by expert: decode the expert, then a matmul over its rows). Same contract as mxfp4_moe_decode
(csrc/mxfp4_matvec.c), which re-reads an expert for every routed row; here each hit expert is read once per
call (per chunk of `chunk` rows, mxfp4_cpu.PREFILL_CHUNK) and its decoded weights are used by all of its rows:
  - the routed rows are grouped by expert (a counting sort, stable: deterministic), experts with none skipped;
  - per hit expert, 4 output rows at a time are decoded (FP4 code * E8M0 scale, exact in float32) into a small
    tile that stays in L1 (never a whole expert in memory: the engine's packed-memory contract), and the tile
    is multiplied by all of the expert's rows, 4 rows of x at a time (AVX-512: 16 zmm accumulators, then one
    transposing horizontal sum per 4 of them) while the next tile's bytes are prefetched;
  - biases, SwiGLU (quirks as in moe.py; AVX-512 with Cephes' expf polynomial, ~1 ulp from libm's), mlp2 the
    same way, bias, times the routing weight into out (per token in expert order: deterministic).
Not the release layout in memory: a decoded tile row keeps each block's 16 low-nibble values (even k) before
its 16 high-nibble values (odd k), and x is gathered in the same order, so no interleave is ever done.
Layout (read in place): blocks uint8 (E, O, B, 16), LOW nibble first; scales uint8 (E, O, B), E8M0 (0 = 2**-127).
AVX2 (CPUs without AVX-512): the same tiles, decoded 8 codes a register (common.h's fp4_avx2), dots 4 weight rows
x 2 rows of x (8 ymm accumulators); x's reordering and SwiGLU stay scalar there. Int8 activations (q8, the
classes "+int8"): the tiles hold the weights as int8 and the dots are integer (matmul_q8: AVX-512 VNNI or AVX2,
the same bits). A scalar path serves other CPUs; all sum in float32.
Legend: N tokens, C hidden, E experts, A experts per token, I intermediate, R = N*A routed rows, n an expert's
rows in a chunk, O output rows, K = B*32 inputs of a matrix.
*/
#include "q8.h"

#define TILE 4  /* weight rows decoded at once: O (2I or C, multiples of 32) is a multiple of it */

/* where element k of a row goes in the tile order: per block of 32, the evens then the odds */
static inline int64_t perm(int64_t k) { return (k & ~(int64_t)31) + ((k & 1) << 4) + ((k & 31) >> 1); }

/* TILE rows (B, 16) bytes + (B) scales each -> tile (TILE, B*32) float32 in the tile order */
static void decode_scalar(const uint8_t *bl, const uint8_t *sc, float *tile, int64_t B) {
    for (int64_t i = 0; i < TILE * B; i++) {
        float s = e8m0(sc[i]);
        for (int j = 0; j < 16; j++) {
            tile[i * 32 + j] = FP4[bl[i * 16 + j] & 15] * s;
            tile[i * 32 + 16 + j] = FP4[bl[i * 16 + j] >> 4] * s;
        }
    }
}

/* out[r * ldo + t] = tile[t] . xg[r] for the TILE rows t and the n rows r of xg (n, K) */
static void dots_scalar(const float *tile, const float *xg, float *out, int64_t ldo, int64_t n, int64_t K) {
    for (int64_t r = 0; r < n; r++)
        for (int t = 0; t < TILE; t++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += tile[t * K + k] * xg[r * K + k];
            out[r * ldo + t] = acc;
        }
}

/* one row, natural order -> tile order (K a multiple of 32) */
static void tile_order_scalar(const float *src, float *dst, int64_t K) {
    for (int64_t k = 0; k < K; k++) dst[perm(k)] = src[k];
}

/* one row of mlp1's output h (2I) + its bias -> act (I), natural order. Quirks as in moe.py: rows interleave
   gate (even) and linear (odd); gate clamped above only, linear both ways; gate * sigmoid(alpha gate) * (linear + 1) */
static void swiglu_scalar(const float *h, const float *bias, float *act, int64_t I, float limit, float alpha) {
    for (int64_t i = 0; i < I; i++) {
        float gate = h[2 * i] + bias[2 * i], lin = h[2 * i + 1] + bias[2 * i + 1];
        gate = gate > limit ? limit : gate;
        lin = lin > limit ? limit : (lin < -limit ? -limit : lin);
        act[i] = gate / (1.0f + expf(-alpha * gate)) * (lin + 1.0f);
    }
}

#ifdef __x86_64__
/* the elements of (lo, hi) (32 consecutive floats) at even positions, or at odd ones (odd = 1) */
__attribute__((target("avx512f")))
static inline __m512 pick(__m512 lo, __m512 hi, int odd) {
    const __m512i idx = _mm512_add_epi32(_mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
                                         _mm512_set1_epi32(odd));
    return _mm512_permutex2var_ps(lo, idx, hi);
}

__attribute__((target("avx512f")))
static void tile_order_avx512(const float *src, float *dst, int64_t K) {
    for (int64_t k = 0; k < K; k += 32) {
        __m512 lo = _mm512_loadu_ps(src + k), hi = _mm512_loadu_ps(src + k + 16);
        _mm512_storeu_ps(dst + k, pick(lo, hi, 0));
        _mm512_storeu_ps(dst + k + 16, pick(lo, hi, 1));
    }
}

__attribute__((target("avx512f")))
static void swiglu_avx512(const float *h, const float *bias, float *act, int64_t I, float limit, float alpha) {
    const __m512 lim = _mm512_set1_ps(limit), neg = _mm512_set1_ps(-limit), one = _mm512_set1_ps(1.0f);
    const __m512 nalpha = _mm512_set1_ps(-alpha);
    for (int64_t i = 0; i < I; i += 16) {
        __m512 lo = _mm512_add_ps(_mm512_loadu_ps(h + 2 * i), _mm512_loadu_ps(bias + 2 * i));
        __m512 hi = _mm512_add_ps(_mm512_loadu_ps(h + 2 * i + 16), _mm512_loadu_ps(bias + 2 * i + 16));
        __m512 gate = _mm512_min_ps(lim, pick(lo, hi, 0));  /* NaN stays NaN (min returns its second operand) */
        __m512 lin = _mm512_max_ps(neg, _mm512_min_ps(lim, pick(lo, hi, 1)));
        __m512 sig = _mm512_div_ps(gate, _mm512_add_ps(one, exp_avx512(_mm512_mul_ps(nalpha, gate))));
        _mm512_storeu_ps(act + i, _mm512_mul_ps(sig, _mm512_add_ps(lin, one)));
    }
}

__attribute__((target("avx512f")))
static void decode_avx512(const uint8_t *bl, const uint8_t *sc, float *tile, int64_t B, float *sf) {
    const __m512 table = _mm512_loadu_ps(FP4);
    int64_t i = 0;
    for (; i + 16 <= TILE * B; i += 16) {  /* the scales as float32 powers of two, 16 at a time */
        __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(sc + i)));
        __mmask16 zero = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
        __m512i bits = _mm512_mask_mov_epi32(_mm512_slli_epi32(e, 23), zero, _mm512_set1_epi32(1 << 22));
        _mm512_storeu_si512(sf + i, bits);
    }
    for (; i < TILE * B; i++) sf[i] = e8m0(sc[i]);
    for (i = 0; i < TILE * B; i++) {
        __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(bl + i * 16)));
        __m512 s = _mm512_set1_ps(sf[i]);  /* a broadcast from memory: a load, not a shuffle */
        _mm512_storeu_ps(tile + i * 32, _mm512_mul_ps(_mm512_permutexvar_ps(c, table), s));  /* low 4 bits */
        _mm512_storeu_ps(tile + i * 32 + 16, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), table), s));
    }
}

/* v's two 256-bit halves added */
__attribute__((target("avx512f")))
static inline __m256 halves(__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* the sums of 4 vectors -> one (4) vector, always in the same order */
__attribute__((target("avx512f")))
static inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m256 ab = _mm256_hadd_ps(halves(a), halves(b)), cd = _mm256_hadd_ps(halves(c), halves(d));
    __m256 abcd = _mm256_hadd_ps(ab, cd);  /* (a0123 b0123 c0123 d0123 a4567 b4567 c4567 d4567) */
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

__attribute__((target("avx512f")))
static void dots_avx512(const float *tile, const float *xg, float *out, int64_t ldo, int64_t n, int64_t K) {
    const float *w0 = tile, *w1 = tile + K, *w2 = tile + 2 * K, *w3 = tile + 3 * K;
    int64_t r = 0;
    for (; r + 4 <= n; r += 4) {  /* 4 weight rows x 4 rows of x: each load feeds 4 FMAs */
        const float *x0 = xg + r * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
        __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
               a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        for (int64_t k = 0; k < K; k += 16) {
            __m512 v0 = _mm512_loadu_ps(w0 + k), v1 = _mm512_loadu_ps(w1 + k), v2 = _mm512_loadu_ps(w2 + k),
                   v3 = _mm512_loadu_ps(w3 + k), x;
            x = _mm512_loadu_ps(x0 + k);
            a00 = _mm512_fmadd_ps(v0, x, a00), a01 = _mm512_fmadd_ps(v1, x, a01);
            a02 = _mm512_fmadd_ps(v2, x, a02), a03 = _mm512_fmadd_ps(v3, x, a03);
            x = _mm512_loadu_ps(x1 + k);
            a10 = _mm512_fmadd_ps(v0, x, a10), a11 = _mm512_fmadd_ps(v1, x, a11);
            a12 = _mm512_fmadd_ps(v2, x, a12), a13 = _mm512_fmadd_ps(v3, x, a13);
            x = _mm512_loadu_ps(x2 + k);
            a20 = _mm512_fmadd_ps(v0, x, a20), a21 = _mm512_fmadd_ps(v1, x, a21);
            a22 = _mm512_fmadd_ps(v2, x, a22), a23 = _mm512_fmadd_ps(v3, x, a23);
            x = _mm512_loadu_ps(x3 + k);
            a30 = _mm512_fmadd_ps(v0, x, a30), a31 = _mm512_fmadd_ps(v1, x, a31);
            a32 = _mm512_fmadd_ps(v2, x, a32), a33 = _mm512_fmadd_ps(v3, x, a33);
        }
        _mm_storeu_ps(out + r * ldo, hsum4(a00, a01, a02, a03));
        _mm_storeu_ps(out + (r + 1) * ldo, hsum4(a10, a11, a12, a13));
        _mm_storeu_ps(out + (r + 2) * ldo, hsum4(a20, a21, a22, a23));
        _mm_storeu_ps(out + (r + 3) * ldo, hsum4(a30, a31, a32, a33));
    }
    for (; r < n; r++) {  /* the last 1-3 rows of x */
        const float *x0 = xg + r * K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < K; k += 16) {
            __m512 x = _mm512_loadu_ps(x0 + k);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), x, a0), a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), x, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), x, a2), a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), x, a3);
        }
        _mm_storeu_ps(out + r * ldo, hsum4(a0, a1, a2, a3));
    }
}

/* AVX2: a tile row's 32 values from 16 bytes, 8 codes a register (common.h's fp4_avx2) */
__attribute__((target("avx2,fma")))
static void decode_avx2(const uint8_t *bl, const uint8_t *sc, float *tile, int64_t B) {
    const __m256 table = _mm256_loadu_ps((const float *)FP4_XOR28);
    for (int64_t i = 0; i < TILE * B; i++) {
        __m256 s = _mm256_set1_ps(e8m0(sc[i]));
        for (int h = 0; h < 2; h++) {
            __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(bl + i * 16 + h * 8)));
            _mm256_storeu_ps(tile + i * 32 + h * 8, _mm256_mul_ps(fp4_avx2(c, table), s));
            _mm256_storeu_ps(tile + i * 32 + 16 + h * 8, _mm256_mul_ps(fp4_avx2(_mm256_srli_epi32(c, 4), table), s));
        }
    }
}

/* the sums of 4 vectors -> one (4) vector, always in the same order */
__attribute__((target("avx2,fma")))
static inline __m128 hsum4_avx2(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* 4 weight rows x 2 rows of x a step: 8 accumulators, 4 weight registers, one x register (16 ymm in all) */
__attribute__((target("avx2,fma")))
static void dots_avx2(const float *tile, const float *xg, float *out, int64_t ldo, int64_t n, int64_t K) {
    const float *w0 = tile, *w1 = tile + K, *w2 = tile + 2 * K, *w3 = tile + 3 * K;
    int64_t r = 0;
    for (; r + 2 <= n; r += 2) {
        const float *x0 = xg + r * K, *x1 = x0 + K;
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
               a13 = a00;
        for (int64_t k = 0; k < K; k += 8) {
            __m256 v0 = _mm256_loadu_ps(w0 + k), v1 = _mm256_loadu_ps(w1 + k), v2 = _mm256_loadu_ps(w2 + k),
                   v3 = _mm256_loadu_ps(w3 + k), x;
            x = _mm256_loadu_ps(x0 + k);
            a00 = _mm256_fmadd_ps(v0, x, a00), a01 = _mm256_fmadd_ps(v1, x, a01);
            a02 = _mm256_fmadd_ps(v2, x, a02), a03 = _mm256_fmadd_ps(v3, x, a03);
            x = _mm256_loadu_ps(x1 + k);
            a10 = _mm256_fmadd_ps(v0, x, a10), a11 = _mm256_fmadd_ps(v1, x, a11);
            a12 = _mm256_fmadd_ps(v2, x, a12), a13 = _mm256_fmadd_ps(v3, x, a13);
        }
        _mm_storeu_ps(out + r * ldo, hsum4_avx2(a00, a01, a02, a03));
        _mm_storeu_ps(out + (r + 1) * ldo, hsum4_avx2(a10, a11, a12, a13));
    }
    for (; r < n; r++) {  /* the last row of x */
        const float *x0 = xg + r * K;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < K; k += 8) {
            __m256 x = _mm256_loadu_ps(x0 + k);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), x, a0), a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), x, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), x, a2), a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), x, a3);
        }
        _mm_storeu_ps(out + r * ldo, hsum4_avx2(a0, a1, a2, a3));
    }
}
/* Int8 (q8, CPUs with AVX2): TILE weight rows decoded once into the doubled FP4 integers (q8.h's FP4_X2) in the
   prepared x's pair order, then every one of the expert's rows dotted with them. The products are unsigned x
   signed bytes (vpmaddubsw, vpdpbusd): x's q offset by 128 (its sign bit flipped) times w, and 128 * (the sum of
   the same w) taken off in int32 (exact; |vpmaddubsw's pair sums| <= 2 * 255 * 12 fit int16), so each lane holds
   the int32 sum of the decode's kernels (mxfp4_matvec.c) and each row's float32 sums run in their order: one
   token's products here equal its decode products bit for bit. Tile layout, per pair of rows (0 1, 2 3) and pair
   of blocks, QPAIR bytes: w of the even elements of the two rows (32 bytes each), w of the odd ones, the two rows'
   corrections (8 int32 each), their scales (8 float32 each: PAIR_SCALE_AVX2); the AVX-512 kernel reads each
   quarter as one register (two rows a register, as mxfp4_matvec.c's rows_q8_vnni). */
#define QPAIR 256

__attribute__((target("avx2,fma")))
static void decode_q8_avx2(const uint8_t *bl, const float *sf, uint8_t *qt, int64_t B) {
    const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1), bias = _mm256_set1_epi8((char)0x80);
    const __m256i kv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)FP4_X2));
    const int64_t P = B / 2;  /* pairs of blocks a row */
    for (int t = 0; t < TILE; t++)
        for (int64_t b = 0; b + 1 < B; b += 2) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(bl + (t * B + b) * 16));
            __m256i wl = _mm256_shuffle_epi8(kv, _mm256_and_si256(v, nib));
            __m256i wh = _mm256_shuffle_epi8(kv, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib));
            __m256i corr = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(bias, wl),
                                                              _mm256_maddubs_epi16(bias, wh)), ones);
            uint8_t *q = qt + ((t / 2) * P + b / 2) * QPAIR + (t & 1) * 32;
            _mm256_storeu_si256((__m256i *)q, wl);
            _mm256_storeu_si256((__m256i *)(q + 64), wh);
            _mm256_storeu_si256((__m256i *)(q + 128), corr);
            _mm256_storeu_ps((float *)(q + 192), PAIR_SCALE_AVX2(sf + t * B + b));
        }
}

/* the same tile with AVX-512 VNNI: two rows a register, each quarter of a QPAIR written at once (the corrections
   by vpdpbusd: the same int32 sums as vpmaddubsw + vpmaddwd above) */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
static void decode_q8_vnni(const uint8_t *bl, const float *sf, uint8_t *qt, int64_t B) {
    const __m512i nib = _mm512_set1_epi8(0x0F), bias = _mm512_set1_epi8((char)0x80);
    const __m512i kv = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)FP4_X2));
    const __m512i lanes = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const int64_t P = B / 2;
    for (int t = 0; t < TILE; t += 2)
        for (int64_t b = 0; b + 1 < B; b += 2) {
            __m512i v = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(bl + (t * B + b) * 16))),
                _mm256_loadu_si256((const __m256i *)(bl + ((t + 1) * B + b) * 16)), 1);
            __m512i wl = _mm512_shuffle_epi8(kv, _mm512_and_si512(v, nib));
            __m512i wh = _mm512_shuffle_epi8(kv, _mm512_and_si512(_mm512_srli_epi16(v, 4), nib));
            __m512i corr = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, wl), bias, wh);
            __m128 s4 = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)(sf + t * B + b)),
                                     (const __m64 *)(sf + (t + 1) * B + b));  /* row t's two scales, t+1's */
            uint8_t *q = qt + ((t / 2) * P + b / 2) * QPAIR;
            _mm512_storeu_si512(q, wl);
            _mm512_storeu_si512(q + 64, wh);
            _mm512_storeu_si512(q + 128, corr);
            _mm512_storeu_ps(q + 192, _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(s4)));
        }
}

/* one pair's int32 lane sums of a tile row (at qp) against the offset x (xe, xo), minus the correction, as float32 */
#define PAIR_DOT_QT_AVX2(qp, xe, xo)                                                                           \
    _mm256_cvtepi32_ps(_mm256_sub_epi32(                                                                      \
        _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(xe, _mm256_loadu_si256((const __m256i *)(qp))),   \
                                           _mm256_maddubs_epi16(xo, _mm256_loadu_si256((const __m256i *)((qp)+64)))), \
                          ones),                                                                              \
        _mm256_loadu_si256((const __m256i *)((qp) + 128))))
#define PAIR_STEP_QT_AVX2(qp, a)                                                                              \
    a = _mm256_fmadd_ps(PAIR_DOT_QT_AVX2(qp, xe, xo),                                                         \
                        _mm256_mul_ps(dq, _mm256_loadu_ps((const float *)((qp) + 192))), a)

/* out[r * ldo + t] = tile row t . x_r for the n prepared rows x_r (Q8_FLOATS(B) floats each); bl, sf: the tile's
   packed rows and scales (an odd B's last block, as the decode kernels: block_q8 in natural order) */
__attribute__((target("avx2,fma")))
static void dots_q8_avx2(const uint8_t *qt, const uint8_t *bl, const float *sf, const float *prep, float *out,
                         int64_t ldo, int64_t n, int64_t B) {
    const __m256i ones = _mm256_set1_epi16(1), bias = _mm256_set1_epi8((char)0x80);
    const int64_t P = B / 2, B2 = P * 2;
    for (int64_t r = 0; r < n; r++) {
        const float *dv = prep + r * Q8_FLOATS(B);
        const int8_t *q = (const int8_t *)(dv + 5 * B);
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t b = 0; b < B2; b += 2) {
            __m256i xe = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(q + b * 32)), bias);
            __m256i xo = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(q + b * 32 + 32)), bias);
            __m256 dq = _mm256_loadu_ps(dv + b * 4);
            const uint8_t *q01 = qt + (b / 2) * QPAIR, *q23 = q01 + P * QPAIR;
            PAIR_STEP_QT_AVX2(q01, a0);
            PAIR_STEP_QT_AVX2(q01 + 32, a1);
            PAIR_STEP_QT_AVX2(q23, a2);
            PAIR_STEP_QT_AVX2(q23 + 32, a3);
        }
        __m256 acc[TILE] = {a0, a1, a2, a3};
        for (int t = 0; t < TILE; t++)
            out[r * ldo + t] = q8_row_total(acc[t], bl + t * B * 16, sf + t * B, dv, B);
    }
}

/* the same with AVX-512 VNNI: two tile rows a register (vpdpbusd on the offset x broadcast to both halves), four
   rows of x at a time against a pair of blocks' tile held in 8 registers (AVX-512 has 32) */
#define STEP_QT_VNNI(xe, xo, wl, wh, corr, sc, dq, a)                                                          \
    a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(                                                   \
                            _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xe, wl), xo, wh), corr)), \
                        _mm512_mul_ps(dq, sc), a)

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
static void dots_q8_vnni(const uint8_t *qt, const uint8_t *bl, const float *sf, const float *prep, float *out,
                         int64_t ldo, int64_t n, int64_t B) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const int64_t P = B / 2, B2 = P * 2;
    for (int64_t r0 = 0; r0 < n; r0 += 4) {
        const float *dv[4];
        for (int j = 0; j < 4; j++) dv[j] = prep + (r0 + j < n ? r0 + j : r0) * Q8_FLOATS(B);  /* past n: a dummy */
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int64_t b = 0; b < B2; b += 2) {
            const uint8_t *q01 = qt + (b / 2) * QPAIR, *q23 = q01 + P * QPAIR;
            const __m512i wl01 = _mm512_loadu_si512(q01), wh01 = _mm512_loadu_si512(q01 + 64);
            const __m512i c01 = _mm512_loadu_si512(q01 + 128), wl23 = _mm512_loadu_si512(q23);
            const __m512i wh23 = _mm512_loadu_si512(q23 + 64), c23 = _mm512_loadu_si512(q23 + 128);
            const __m512 s01 = _mm512_loadu_ps((const float *)(q01 + 192));
            const __m512 s23 = _mm512_loadu_ps((const float *)(q23 + 192));
#define TOKEN_QT_VNNI(j, aa, ab)                                                                                \
    {                                                                                                           \
        const int8_t *q_ = (const int8_t *)(dv[j] + 5 * B) + b * 32;                                            \
        __m512i xe_ = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)q_)), bias);   \
        __m512i xo_ = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(q_ + 32))), bias); \
        __m512 dq_ = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(dv[j] + b * 4)))); \
        STEP_QT_VNNI(xe_, xo_, wl01, wh01, c01, s01, dq_, aa);                                                  \
        STEP_QT_VNNI(xe_, xo_, wl23, wh23, c23, s23, dq_, ab);                                                  \
    }
            TOKEN_QT_VNNI(0, a0, a1)
            TOKEN_QT_VNNI(1, a2, a3)
            TOKEN_QT_VNNI(2, a4, a5)
            TOKEN_QT_VNNI(3, a6, a7)
#undef TOKEN_QT_VNNI
        }
        __m512 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
        for (int j = 0; j < 4 && r0 + j < n; j++) {
            __m256 row[TILE] = {_mm512_castps512_ps256(acc[2 * j]), high256_ps(acc[2 * j]),
                                _mm512_castps512_ps256(acc[2 * j + 1]), high256_ps(acc[2 * j + 1])};
            for (int t = 0; t < TILE; t++)
                out[(r0 + j) * ldo + t] = q8_row_total(row[t], bl + t * B * 16, sf + t * B, dv[j], B);
        }
    }
}
#endif

/* one expert's packed matrix (O, B, 16) + scales (O, B) times its n rows xg (n, B*32, tile order) -> out (n, O),
   TILE rows decoded at a time into a tile (TILE * B*32 floats, on each thread's stack) */
static void matmul(const uint8_t *bl, const uint8_t *sc, const float *xg, float *out, int64_t n, int64_t O,
                   int64_t B, int wide) {
#pragma omp parallel for schedule(static)  /* tiles of output rows over the threads, each with its own tile */
    for (int64_t o = 0; o < O; o += TILE) {
        float tile[TILE * B * 32], sf[TILE * B];
        (void)sf;  /* AVX-512 only */
#ifdef __x86_64__
        if (wide != SIMD_NONE) {
            for (int64_t i = 0; i < TILE * B * 16; i += 64)  /* the next tile's bytes arrive during these dots */
                _mm_prefetch((const char *)(bl + (o + TILE) * B * 16 + i), _MM_HINT_T0);
            _mm_prefetch((const char *)(sc + (o + TILE) * B), _MM_HINT_T0);
        }
        if (wide == SIMD_AVX512) {
            decode_avx512(bl + o * B * 16, sc + o * B, tile, B, sf);
            dots_avx512(tile, xg, out + o, O, n, B * 32);
            continue;
        }
        if (wide == SIMD_AVX2) {
            decode_avx2(bl + o * B * 16, sc + o * B, tile, B);
            dots_avx2(tile, xg, out + o, O, n, B * 32);
            continue;
        }
#endif
        decode_scalar(bl + o * B * 16, sc + o * B, tile, B);
        dots_scalar(tile, xg, out + o, O, n, B * 32);
    }
}

#ifdef __x86_64__
/* matmul for int8 x (AVX2, or AVX-512 VNNI dots): the n rows prepared by q8_prepare (pairs), tiles of TILE rows
   decoded to int8 */
static void matmul_q8(const uint8_t *bl, const uint8_t *sc, const float *prep, float *out, int64_t n, int64_t O,
                      int64_t B, int vnni) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < O; o += TILE) {
        float sf[TILE * B];
        uint8_t qt[TILE / 2 * (B / 2) * QPAIR + 1];  /* + 1: never zero-sized (B = 1) */
        for (int64_t i = 0; i < TILE * B * 16; i += 64)  /* the next tile's bytes arrive during these dots */
            _mm_prefetch((const char *)(bl + (o + TILE) * B * 16 + i), _MM_HINT_T0);
        scales_avx2(sc + o * B, sf, TILE * B);
        (vnni ? decode_q8_vnni : decode_q8_avx2)(bl + o * B * 16, sf, qt, B);
        (vnni ? dots_q8_vnni : dots_q8_avx2)(qt, bl + o * B * 16, sf, prep, out + o, O, n, B);
    }
}
#endif

/* matmul, or matmul_q8 when x is prepared int8 (q8int: only on AVX2 CPUs) */
static void matmul_any(const uint8_t *bl, const uint8_t *sc, const float *xg, float *out, int64_t n, int64_t O,
                       int64_t B, int wide, int q8int) {
#ifdef __x86_64__
    if (q8int) {
        matmul_q8(bl, sc, xg, out, n, O, B, q8_vnni(wide));
        return;
    }
#endif
    (void)q8int;
    matmul(bl, sc, xg, out, n, O, B, wide);
}

static void tile_order(const float *src, float *dst, int64_t K, int wide) {
#ifdef __x86_64__
    if (wide == SIMD_AVX512) {
        tile_order_avx512(src, dst, K);
        return;
    }
#endif
    tile_order_scalar(src, dst, K);
}

static void swiglu(const float *h, const float *bias, float *act, int64_t I, float limit, float alpha, int wide) {
#ifdef __x86_64__
    if (wide == SIMD_AVX512) {
        swiglu_avx512(h, bias, act, I, limit, alpha);
        return;
    }
#endif
    swiglu_scalar(h, bias, act, I, limit, alpha);
}

/* The whole MoE of N tokens, float32: out[n] = sum_a weights[n, a] * (W2_e @ swiglu(W1_e @ x[n] + b1_e) + b2_e),
   e = ids[n, a]. Arguments as mxfp4_moe_decode's (q8: both matmuls' inputs in Q8_0, integer dots on int8 tiles,
   matmul_q8; without AVX2 the Q8_0 values through the float tiles: the same class); work: (2 * (E + 1) + N * A)
   int32; scratch: chunk * (2C + 3I) + 3I + C floats, + N * 13C/32 with q8 (each token's Q8_0 x, prepared once for
   its A experts), chunk >= 1 the rows of one expert handled at once (an expert with more is decoded once per
   chunk). Returns 0, or -1 when an id is outside [0, E) (checked first). */
int mxfp4_moe_prefill(const uint8_t *w1b, const uint8_t *w1s, const void *b1, const uint8_t *w2b,
                      const uint8_t *w2s, const void *b2, int bias_bf16, const int32_t *ids, const float *weights,
                      const float *x, float *out, int32_t *work, float *scratch, int64_t chunk, int64_t N, int64_t A,
                      int64_t E, int64_t I, int64_t C, float limit, float alpha, int q8, int simd) {
    int64_t R = N * A;
    for (int64_t r = 0; r < R; r++)
        if (ids[r] < 0 || ids[r] >= E) return -1;
    int wide = use_simd(simd), q8int = q8 && wide != SIMD_NONE;  /* scalar q8: Q8_0 values, float tiles */
    int32_t *start = work, *next = work + E + 1, *order = work + 2 * (E + 1);
    for (int64_t e = 0; e <= E; e++) start[e] = 0;
    for (int64_t r = 0; r < R; r++) start[ids[r] + 1]++;
    for (int64_t e = 0; e < E; e++) start[e + 1] += start[e];
    for (int64_t e = 0; e < E; e++) next[e] = start[e];
    for (int64_t r = 0; r < R; r++) order[next[ids[r]]++] = (int32_t)r;  /* routed rows by expert, stable */

    int64_t B1 = C / 32, B2 = I / 32;
    float *xg = scratch, *h = xg + chunk * C, *act = h + chunk * 2 * I, *y = act + chunk * I;
    float *row = y + chunk * C, *bias1 = row + I, *bias2 = bias1 + 2 * I, *xq = bias2 + C;
    if (q8int)
        for (int64_t t = 0; t < N; t++) q8_prepare(x + t * C, xq + t * Q8_FLOATS(B1), B1, 1);
    for (int64_t i = 0; i < N * C; i++) out[i] = 0.0f;
    for (int64_t e = 0; e < E; e++) {
        if (start[e] == start[e + 1]) continue;  /* no rows: its weights are never read */
        for (int64_t i = 0; i < 2 * I; i++) bias1[i] = load_f(b1, e * 2 * I + i, bias_bf16);
        for (int64_t c = 0; c < C; c++) bias2[c] = load_f(b2, e * C + c, bias_bf16);
        for (int64_t r0 = start[e]; r0 < start[e + 1]; r0 += chunk) {
            int64_t n = start[e + 1] - r0 < chunk ? start[e + 1] - r0 : chunk;
            for (int64_t j = 0; j < n; j++) {
                const float *xr = x + (order[r0 + j] / A) * C;
                if (q8int) {  /* 13/32 of C: fits xg's chunk * C */
                    memcpy(xg + j * Q8_FLOATS(B1), xq + (order[r0 + j] / A) * Q8_FLOATS(B1), Q8_FLOATS(B1) * 4);
                    continue;
                }
                tile_order(xr, xg + j * C, C, wide);
                if (q8) q8_0_round(xg + j * C, C);  /* the tile order permutes within blocks: same blocks */
            }
            /* (n, 2I) */
            matmul_any(w1b + e * 2 * I * B1 * 16, w1s + e * 2 * I * B1, xg, h, n, 2 * I, B1, wide, q8int);
            for (int64_t j = 0; j < n; j++) {
                swiglu(h + j * 2 * I, bias1, row, I, limit, alpha, wide);
                if (q8int) {
                    q8_prepare(row, act + j * Q8_FLOATS(B2), B2, 1);
                    continue;
                }
                tile_order(row, act + j * I, I, wide);  /* mlp2's input */
                if (q8) q8_0_round(act + j * I, I);
            }
            matmul_any(w2b + e * C * B2 * 16, w2s + e * C * B2, act, y, n, C, B2, wide, q8int);  /* (n, C) */
            for (int64_t j = 0; j < n; j++) {
                float *o = out + (order[r0 + j] / A) * C, wgt = weights[order[r0 + j]];
                for (int64_t c = 0; c < C; c++) o[c] += wgt * (y[j * C + c] + bias2[c]);
            }
        }
    }
    return 0;
}
