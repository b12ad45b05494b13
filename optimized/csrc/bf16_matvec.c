/* bfloat16 matrix times one vector on CPU, float32 sums: out[o] = sum_c W[o, c] * x[c] (+ bias[o]).

Built by optimized/cbuild.py, called by optimized/linear.py; its *_ref is torch.mv on float32 copies
(tests/test_optimized_ops.py). For the dense projections of a batch-1 decode step in bf16 (qkv, out, router,
unembedding): torch 2.13's CPU bf16 mv costs ~28 us for the 32x768 router and runs at 12-20 GB/s on matrices
already in cache; vdpbf16ps makes the product nearly free, so only the weight reads remain.
AVX512_BF16: vdpbf16ps multiplies 32 bf16 pairs exactly and adds them into 16 float32 lanes; x is bf16 already
(the activations of a bf16 model), so nothing is rounded before the sums. Without AVX512_BF16 (or when C is not
a multiple of 32) a scalar path widens each bf16 to float32 (a 16-bit shift) and sums in float32.
bf16_f32_matmul: the same product, for N rows of x, in a float32 model whose checkpoint stores the matrix in
bf16 (the release format): the weights stay bf16 in memory (half the bytes of a float32 copy) and are widened in
registers (a 16-bit shift or a mask: exact), x stays float32, products and sums in float32 (FMA). Same numbers
as torch.mv on the float32 copy, up to the order of the sums.
Legend: O output rows, C input features.
*/
#include "common.h"

static void rows_scalar(const uint16_t *w, const uint16_t *x, const uint16_t *bias, float *out, int64_t O,
                        int64_t C) {
    for (int64_t o = 0; o < O; o++) {
        float acc = 0.0f;
        for (int64_t c = 0; c < C; c++) acc += widen(w[o * C + c]) * widen(x[c]);
        out[o] = acc + (bias ? widen(bias[o]) : 0.0f);
    }
}

#ifdef __x86_64__
/* Rows are read front to back, 64 bytes of each of 4 rows per step; each step asks for the lines PREFETCH_BYTES
   (common.h) ahead of all four. */
/* Rows are split over OpenMP threads (static: each thread streams one contiguous run of rows) when the matrix has
   at least PARALLEL_MIN weights; below, a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 17)
#define PREFETCH4(p, C, c)                                                                  \
    for (int r_ = 0; r_ < 4; r_++)                                                          \
        _mm_prefetch((const char *)((p) + r_ * (C) + (c)) + PREFETCH_BYTES, _MM_HINT_T0);

__attribute__((target("avx512f,avx512bf16")))
static void rows_bf16(const uint16_t *w, const uint16_t *x, const uint16_t *bias, float *out, int64_t O,
                      int64_t C) {
    int64_t O4 = O / 4 * 4;
#pragma omp parallel for schedule(static) if (O * C >= PARALLEL_MIN)
    for (int64_t o = 0; o < O4; o += 4) {  /* four rows at once: independent sums, x loaded once per 32 columns */
        const uint16_t *p = w + o * C;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (int64_t c = 0; c < C; c += 32) {
            PREFETCH4(p, C, c)
            __m512bh xv = (__m512bh)_mm512_loadu_si512(x + c);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(p + c), xv);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(p + C + c), xv);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(p + 2 * C + c), xv);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(p + 3 * C + c), xv);
        }
        out[o] = _mm512_reduce_add_ps(a0) + (bias ? widen(bias[o]) : 0.0f);
        out[o + 1] = _mm512_reduce_add_ps(a1) + (bias ? widen(bias[o + 1]) : 0.0f);
        out[o + 2] = _mm512_reduce_add_ps(a2) + (bias ? widen(bias[o + 2]) : 0.0f);
        out[o + 3] = _mm512_reduce_add_ps(a3) + (bias ? widen(bias[o + 3]) : 0.0f);
    }
    if (O4 < O) rows_scalar(w + O4 * C, x, bias ? bias + O4 : 0, out + O4, O - O4, C);
}
#endif

static void rows_f32_scalar(const uint16_t *w, const float *x, const float *bias, float *out, int64_t O, int64_t C,
                            int64_t N, int64_t ldo) {
    for (int64_t o = 0; o < O; o++)
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t c = 0; c < C; c++) acc += widen(w[o * C + c]) * x[n * C + c];
            out[n * ldo + o] = acc + (bias ? bias[o] : 0.0f);
        }
}

#ifdef __x86_64__
/* C % 32 == 0: one 64-byte load holds 32 bf16 weights; each 32-bit lane j holds column 2j in its low half and
   2j+1 in its high half, so (lane << 16) is column 2j widened and (lane & 0xFFFF0000) column 2j+1: two ALU ops
   widen 32 weights, against x split once into its even and odd columns (xe, xo). */
__attribute__((target("avx512f")))
static void rows_f32_split(const uint16_t *w, const float *xe, const float *xo, const float *bias, float *out,
                           int64_t O, int64_t C, int64_t N) {
    const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u);
    const int64_t C2 = C / 2;
    int64_t O4 = O / 4 * 4;
#pragma omp parallel for schedule(static) if (O * C >= PARALLEL_MIN)
    for (int64_t o = 0; o < O4; o += 4) {  /* four rows at once; for N > 1 they stay in L1 while every x row passes */
        const uint16_t *p = w + o * C;
        for (int64_t n = 0; n < N; n++) {
            const float *en = xe + n * C2, *on_ = xo + n * C2;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
            __m512 a3 = _mm512_setzero_ps();
            for (int64_t c = 0; c < C; c += 32) {
                __m512 ev = _mm512_loadu_ps(en + c / 2), od = _mm512_loadu_ps(on_ + c / 2);
#define ROW(acc, r)                                                                                   \
                {                                                                                     \
                    __m512i v_ = _mm512_loadu_si512(p + (r) * C + c);                                 \
                    acc = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v_, 16)), ev, acc);   \
                    acc = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v_, hi)), od, acc);    \
                }
                if (n == 0) PREFETCH4(p, C, c)
                ROW(a0, 0) ROW(a1, 1) ROW(a2, 2) ROW(a3, 3)
#undef ROW
            }
            float *on = out + n * O + o;
            on[0] = _mm512_reduce_add_ps(a0) + (bias ? bias[o] : 0.0f);
            on[1] = _mm512_reduce_add_ps(a1) + (bias ? bias[o + 1] : 0.0f);
            on[2] = _mm512_reduce_add_ps(a2) + (bias ? bias[o + 2] : 0.0f);
            on[3] = _mm512_reduce_add_ps(a3) + (bias ? bias[o + 3] : 0.0f);
        }
    }
    for (int64_t o = O4; o < O; o++)  /* the last O % 4 rows */
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t c = 0; c < C2; c++)
                acc += widen(w[o * C + 2 * c]) * xe[n * C2 + c] + widen(w[o * C + 2 * c + 1]) * xo[n * C2 + c];
            out[n * O + o] = acc + (bias ? bias[o] : 0.0f);
        }
}
#endif

/* w (O, C) bf16 as uint16, x (N, C) float32, bias (O,) float32 or NULL; out (N, O) float32; simd 0: scalar.
   scratch: N * C floats (x's even and odd columns). */
void bf16_f32_matmul(const uint16_t *w, const float *x, const float *bias, float *out, float *scratch, int64_t O,
                     int64_t C, int64_t N, int simd) {
#ifdef __x86_64__
    if (simd && C % 32 == 0 && __builtin_cpu_supports("avx512f")) {
        float *xe = scratch, *xo = scratch + N * (C / 2);
        for (int64_t i = 0; i < N * (C / 2); i++) {
            xe[i] = x[2 * i];
            xo[i] = x[2 * i + 1];
        }
        rows_f32_split(w, xe, xo, bias, out, O, C, N);
        return;
    }
#endif
    rows_f32_scalar(w, x, bias, out, O, C, N, O);
}
/* w (O, C), x (C,), bias (O,) or NULL: bf16 as uint16; out (O,) float32; simd 0 forces the scalar path. */
void bf16_matvec(const uint16_t *w, const uint16_t *x, const uint16_t *bias, float *out, int64_t O, int64_t C,
                 int simd) {
#ifdef __x86_64__
    if (simd && C % 32 == 0 && __builtin_cpu_supports("avx512bf16")) {
        rows_bf16(w, x, bias, out, O, C);
        return;
    }
#endif
    rows_scalar(w, x, bias, out, O, C);
}
