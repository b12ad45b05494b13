/* bfloat16 matrix times one vector on CPU, float32 sums: out[o] = sum_c W[o, c] * x[c] (+ bias[o]).

Built by optimized/cbuild.py, called by optimized/linear.py; its *_ref is torch.mv on float32 copies
(tests/test_optimized_ops.py). For the dense projections of a batch-1 decode step in bf16 (qkv, out, router,
unembedding): torch 2.13's CPU bf16 mv costs ~28 us for the 32x768 router and runs at 12-20 GB/s on matrices
already in cache; vdpbf16ps makes the product nearly free, so only the weight reads remain.
AVX512_BF16: vdpbf16ps multiplies 32 bf16 pairs exactly and adds them into 16 float32 lanes; x is bf16 already
(the activations of a bf16 model), so nothing is rounded before the sums. Without AVX512_BF16 (or when C is not
a multiple of 32) x is widened to float32 once and the weights are widened in registers (a 16-bit shift or a
mask: exact) by the AVX-512F or AVX2 kernel below, whichever the CPU has; no vector unit: a scalar loop.
bf16_f32_matmul: the same product, for N rows of x, in a float32 model whose checkpoint stores the matrix in
bf16 (the release format): the weights stay bf16 in memory (half the bytes of a float32 copy) and are widened in
registers, x stays float32, products and sums in float32 (FMA). Same numbers as torch.mv on the float32 copy,
up to the order of the sums. The kernel is picked per call by what the CPU reports (`pick`); bf16_kernel_name
says which one runs (bench/engine_cpu.py prints it).
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

static float dot_f32(const uint16_t *w, const float *x, int64_t c0, int64_t c1) {
    float acc = 0.0f;
    for (int64_t c = c0; c < c1; c++) acc += widen(w[c]) * x[c];
    return acc;
}

static void rows_f32_scalar(const uint16_t *w, const float *x, const void *bias, int bias_bf16, float *out,
                            int64_t O, int64_t C, int64_t N, int64_t ldo) {
    for (int64_t o = 0; o < O; o++)
        for (int64_t n = 0; n < N; n++)
            out[n * ldo + o] = dot_f32(w + o * C, x + n * C, 0, C) + (bias ? load_f(bias, o, bias_bf16) : 0.0f);
}

#ifdef __x86_64__
/* The widening kernels, for every CPU with AVX-512F or AVX2 (no bf16 instructions needed). Columns [0, Cv),
   Cv = C rounded down to 32: one 64-byte run of a row holds 32 bf16 weights; each 32-bit lane j holds column 2j
   in its low half and 2j+1 in its high half, so (lane << 16) is column 2j widened and (lane & 0xFFFF0000) column
   2j+1: two ALU ops widen a register of weights, against x split once into its even and odd columns (xe, xo,
   N * Cv / 2 floats each). Columns [Cv, C) (C not a multiple of 32) and the last O % 4 rows: dot_f32.
   Products and sums in float32 (FMA: the products of bf16 x are exact, so bf16_matvec's sums are as scalar).
   The bias is float32, or bf16 (bias_bf16: bf16_matvec's). */
#define EPILOGUE(r, sum)                                                                                  \
    on[r] = (sum) + dot_f32(p + (r) * C, xn, Cv, C) + (bias ? load_f(bias, o + (r), bias_bf16) : 0.0f);

__attribute__((target("avx512f")))
static void rows_f32_split(const uint16_t *w, const float *x, const float *xe, const float *xo, const void *bias,
                           int bias_bf16, float *out, int64_t O, int64_t C, int64_t Cv, int64_t N) {
    const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u);
    const int64_t C2 = Cv / 2;
    int64_t O4 = O / 4 * 4;
#pragma omp parallel for schedule(static) if (O * C >= PARALLEL_MIN)
    for (int64_t o = 0; o < O4; o += 4) {  /* four rows at once; for N > 1 they stay in L1 while every x row passes */
        const uint16_t *p = w + o * C;
        for (int64_t n = 0; n < N; n++) {
            const float *en = xe + n * C2, *on_ = xo + n * C2, *xn = x + n * C;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
            __m512 a3 = _mm512_setzero_ps();
            for (int64_t c = 0; c < Cv; c += 32) {
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
            EPILOGUE(0, _mm512_reduce_add_ps(a0)) EPILOGUE(1, _mm512_reduce_add_ps(a1))
            EPILOGUE(2, _mm512_reduce_add_ps(a2)) EPILOGUE(3, _mm512_reduce_add_ps(a3))
        }
    }
    rows_f32_scalar(w + O4 * C, x, bias ? (const char *)bias + O4 * (bias_bf16 ? 2 : 4) : 0, bias_bf16, out + O4,
                    O - O4, C, N, O);
}

/* AVX2 (no AVX-512: most AMD Zen before Zen 4, Intel client cores): the same, 16 columns a 32-byte register, two
   registers a row a step; each row keeps two accumulators (one per register) so that the FMA chains overlap. */
__attribute__((target("avx2,fma")))
static void rows_f32_split_avx2(const uint16_t *w, const float *x, const float *xe, const float *xo,
                                const void *bias, int bias_bf16, float *out, int64_t O, int64_t C, int64_t Cv,
                                int64_t N) {
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
    const int64_t C2 = Cv / 2;
    int64_t O4 = O / 4 * 4;
#pragma omp parallel for schedule(static) if (O * C >= PARALLEL_MIN)
    for (int64_t o = 0; o < O4; o += 4) {
        const uint16_t *p = w + o * C;
        for (int64_t n = 0; n < N; n++) {
            const float *en = xe + n * C2, *on_ = xo + n * C2, *xn = x + n * C;
            __m256 a[4][2];
            for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
            for (int64_t c = 0; c < Cv; c += 32) {
                __m256 e0 = _mm256_loadu_ps(en + c / 2), o0 = _mm256_loadu_ps(on_ + c / 2);
                __m256 e1 = _mm256_loadu_ps(en + c / 2 + 8), o1 = _mm256_loadu_ps(on_ + c / 2 + 8);
                if (n == 0) PREFETCH4(p, C, c)
                for (int r = 0; r < 4; r++) {  /* unrolled by the compiler */
                    __m256i v0 = _mm256_loadu_si256((const __m256i *)(p + r * C + c));
                    __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + r * C + c + 16));
                    a[r][0] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), e0, a[r][0]);
                    a[r][1] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), e1, a[r][1]);
                    a[r][0] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0, hi)), o0, a[r][0]);
                    a[r][1] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v1, hi)), o1, a[r][1]);
                }
            }
            float *on = out + n * O + o;
            for (int r = 0; r < 4; r++) EPILOGUE(r, hsum_avx2(_mm256_add_ps(a[r][0], a[r][1])))
        }
    }
    rows_f32_scalar(w + O4 * C, x, bias ? (const char *)bias + O4 * (bias_bf16 ? 2 : 4) : 0, bias_bf16, out + O4,
                    O - O4, C, N, O);
}
/* AVX2, one row of x (a decode step): the rows one after another, each read front to back with 4 accumulators,
   the next 1 KB asked for as it goes: one sequential stream, which this CPU's prefetchers follow better than 4
   rows side by side. Measured on one Zen 3 core, cold, best of runs (GB/s, this against the 4-row kernel):
   32768x768 18.5 / 13.5, 1280x768 21.8 / 14.6, 201088x2880 19.9 / 19.2; prefetching 4 or 8 KB ahead: 15-17. */
#define SEQ_PREFETCH_BYTES 1024
__attribute__((target("avx2,fma")))
static void rows_f32_seq_avx2(const uint16_t *w, const float *x, const float *xe, const float *xo, const void *bias,
                              int bias_bf16, float *out, int64_t O, int64_t C, int64_t Cv) {
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
#pragma omp parallel for schedule(static) if (O * C >= PARALLEL_MIN)
    for (int64_t o = 0; o < O; o++) {
        const uint16_t *p = w + o * C;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t c = 0; c < Cv; c += 32) {
            _mm_prefetch((const char *)(p + c) + SEQ_PREFETCH_BYTES, _MM_HINT_T0);
            __m256i v0 = _mm256_loadu_si256((const __m256i *)(p + c));
            __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + c + 16));
            a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), _mm256_loadu_ps(xe + c / 2), a0);
            a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0, hi)), _mm256_loadu_ps(xo + c / 2), a1);
            a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), _mm256_loadu_ps(xe + c / 2 + 8), a2);
            a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v1, hi)), _mm256_loadu_ps(xo + c / 2 + 8), a3);
        }
        float sum = hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        out[o] = sum + dot_f32(p, x, Cv, C) + (bias ? load_f(bias, o, bias_bf16) : 0.0f);
    }
}
#undef EPILOGUE
#endif

/* Which kernel runs, by what the CPU reports (cpuid, __builtin_cpu_supports) and a cap: `level` is the highest
   kernel the caller allows (tests force each one; the engine passes KERNEL_AVX512BF16, i.e. the best).
   avx512bf16 needs bf16 x (bf16_matvec) and C % 32 == 0; the widening kernels take any C. */
enum { KERNEL_SCALAR, KERNEL_AVX2, KERNEL_AVX512F, KERNEL_AVX512BF16 };
static const char *const KERNEL_NAMES[] = {"scalar", "avx2", "avx512f", "avx512bf16"};

static int pick(int level, int bf16_x, int64_t C) {
#ifdef __x86_64__
    __builtin_cpu_init();
    if (level >= KERNEL_AVX512BF16 && bf16_x && C % 32 == 0 && __builtin_cpu_supports("avx512bf16"))
        return KERNEL_AVX512BF16;
    if (level >= KERNEL_AVX512F && __builtin_cpu_supports("avx512f")) return KERNEL_AVX512F;
    if (level >= KERNEL_AVX2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KERNEL_AVX2;
#endif
    (void)level, (void)bf16_x, (void)C;
    return KERNEL_SCALAR;
}

/* the name of the kernel that bf16_matvec (bf16_x 1) or bf16_f32_matmul (0) runs for C columns at this cap */
const char *bf16_kernel_name(int level, int bf16_x, int64_t C) { return KERNEL_NAMES[pick(level, bf16_x, C)]; }

/* float32 x (N, C) times w (O, C) bf16 with the kernel k; scratch N * (C / 32 * 32) floats */
static void f32_rows(int k, const uint16_t *w, const float *x, const void *bias, int bias_bf16, float *out,
                     float *scratch, int64_t O, int64_t C, int64_t N) {
#ifdef __x86_64__
    if (k == KERNEL_AVX512F || k == KERNEL_AVX2) {
        int64_t Cv = C / 32 * 32, C2 = Cv / 2;
        float *xe = scratch, *xo = scratch + N * C2;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < C2; i++) {
                xe[n * C2 + i] = x[n * C + 2 * i];
                xo[n * C2 + i] = x[n * C + 2 * i + 1];
            }
        if (k == KERNEL_AVX2 && N == 1)
            rows_f32_seq_avx2(w, x, xe, xo, bias, bias_bf16, out, O, C, Cv);
        else
            (k == KERNEL_AVX512F ? rows_f32_split : rows_f32_split_avx2)(w, x, xe, xo, bias, bias_bf16, out, O, C, Cv,
                                                                        N);
        return;
    }
#endif
    (void)k, (void)scratch;
    rows_f32_scalar(w, x, bias, bias_bf16, out, O, C, N, O);
}

/* w (O, C) bf16 as uint16, x (N, C) float32, bias (O,) float32 or NULL; out (N, O) float32; level: the cap above
   (0: scalar). scratch: N * C floats (x's even and odd columns). */
void bf16_f32_matmul(const uint16_t *w, const float *x, const float *bias, float *out, float *scratch, int64_t O,
                     int64_t C, int64_t N, int level) {
    f32_rows(pick(level, 0, C), w, x, bias, 0, out, scratch, O, C, N);
}

/* w (O, C), x (C,), bias (O,) or NULL: bf16 as uint16; out (O,) float32; level: the cap above. scratch: 2 * C
   floats. Without AVX512_BF16, x is widened to float32 once (exact) and the widening kernels run: the same
   products (a product of two bf16 is exact in float32) and float32 sums as the scalar path, in another order. */
void bf16_matvec(const uint16_t *w, const uint16_t *x, const uint16_t *bias, float *out, float *scratch, int64_t O,
                 int64_t C, int level) {
    int k = pick(level, 1, C);
#ifdef __x86_64__
    if (k == KERNEL_AVX512BF16) {
        rows_bf16(w, x, bias, out, O, C);
        return;
    }
#endif
    if (k == KERNEL_SCALAR) {
        rows_scalar(w, x, bias, out, O, C);
        return;
    }
    float *xf = scratch + C;
    for (int64_t c = 0; c < C; c++) xf[c] = widen(x[c]);
    f32_rows(k, w, xf, bias, 1, out, scratch, O, C, 1);
}
