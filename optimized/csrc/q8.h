/* The int8 activations' prepared x (the classes "+int8", llama.cpp's MXFP4 dot), shared by the decode
   (mxfp4_matvec.c) and prefill (mxfp4_matmul.c) kernels: x in Q8_0 (common.h's q8_0_block), each block's dot
   exact in integers: the FP4 values doubled are the integers 0..12 (FP4_X2), so a block sums 2 * fp4 * q in
   int32 and is then scaled by the weights' E8M0 scale * d / 2. Same values as the float kernels on x rounded to
   Q8_0 (and the same class), up to the order of the float32 sums.
   Layout of a prepared x (q8_prepare) in 13 * B floats: dv (B/2 pairs x 8: d/2 of block b in lanes 0-3, of b+1
   in 4-7), d (B), then q (32 * B bytes): per pair, b's 16 even elements, b+1's, b's 16 odd ones, b+1's (the
   lanes of the AVX2 pair dots); the last block of an odd B in natural order; natural order throughout for the
   scalar kernel. */
#ifndef GPT_OSS_KIT_CSRC_Q8_H
#define GPT_OSS_KIT_CSRC_Q8_H
#include "common.h"

static const int8_t FP4_X2[16] __attribute__((unused)) = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
#define Q8_FLOATS(B) (13 * (B))

static inline void q8_prepare(const float *x, float *prep, int64_t B, int pairs) {
    float *dv = prep, *d = prep + 4 * B;
    int8_t *q = (int8_t *)(prep + 5 * B), blk[32];
    for (int64_t b = 0; b < B; b++) {
        d[b] = q8_0_block(x + b * 32, blk);
        if (!pairs || (b == B - 1 && (B & 1))) {
            memcpy(q + b * 32, blk, 32);
            continue;
        }
        int8_t *base = q + (b & ~(int64_t)1) * 32 + (b & 1) * 16;
        for (int j = 0; j < 16; j++) base[j] = blk[2 * j], base[32 + j] = blk[2 * j + 1];
    }
    for (int64_t b = 0; b + 1 < B; b += 2)
        for (int l = 0; l < 8; l++) dv[b * 4 + l] = 0.5f * d[b + l / 4];
}

/* one block's dot in natural order; scale = E8M0 * d / 2 */
static inline float block_q8(const uint8_t *p, const int8_t *q, float scale) {
    int32_t sum = 0;
    for (int j = 0; j < 16; j++) sum += FP4_X2[p[j] & 15] * q[2 * j] + FP4_X2[p[j] >> 4] * q[2 * j + 1];
    return (float)sum * scale;
}

#ifdef __x86_64__
/* one row's int8 dot with a prepared x, as every vector kernel ends it: the sum of its pairs' lanes (acc), plus,
   for an odd B, the unpaired last block in natural order (p: the row's packed blocks, sf: its scales as float32) */
__attribute__((target("avx2,fma")))
static inline float q8_row_total(__m256 acc, const uint8_t *p, const float *sf, const float *prep, int64_t B) {
    const int64_t B2 = B / 2 * 2;
    if (B2 == B) return hsum_avx2(acc);
    const int8_t *q = (const int8_t *)(prep + 5 * B);  /* q8_prepare's layout: d at 4B, q at 5B */
    return hsum_avx2(acc) + block_q8(p + B2 * 16, q + B2 * 32, sf[B2] * 0.5f * prep[4 * B + B2]);
}
#endif

/* whether the int8 dots take the AVX-512 VNNI kernels (vpdpbusd) at vector level `wide` (common.h's use_simd):
   AVX-512F with BW, VL and VNNI (Intel since Cascade Lake, AMD since Zen 4); else the AVX2 ones */
static inline int q8_vnni(int wide) {
#ifdef __x86_64__
    __builtin_cpu_init();
    return wide == SIMD_AVX512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
#else
    (void)wide;
    return 0;
#endif
}

#endif
