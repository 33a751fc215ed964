/* av_sgemm: row-major single-precision GEMM tuned for the thin shapes of the scVI step
 * (m = 128 rows of a minibatch or of a hidden layer, n up to the genes, k = 128 or the
 * genes), with kernels for three CPU paths (src/isa.h): AVX-512, AVX2 + FMA, and generic C.
 *
 * Design (BLIS-like, reduced to what these shapes need):
 *  - Micro-kernel: an MR x NR = 8 x 32 tile of C. Its accumulators start at zero; per step
 *    p of k each adds op(A)[r][p] * the packed B row with one FMA per element; then
 *    C = acc + beta C (masked past n; beta = 0 never loads C). Every element of C is thus
 *    the same chain of FMAs over p in the same KC blocks of k (whose depths depend on k
 *    only), whatever the tiling, the number of threads or the path: results are bitwise
 *    independent of the thread count, and the paths agree bitwise where they have FMA.
 *    AVX-512 holds the tile in 16 zmm registers; AVX2 runs it as 4-row x 16-column
 *    sub-tiles (8 ymm accumulators, 16 registers in all); the generic kernel is plain C over
 *    4 x 8 sub-tiles that the compiler vectorises (SSE, NEON, SVE). On CPUs without FMA the
 *    generic kernel multiplies and adds (other last bits; deterministic all the same).
 *  - op(B) is packed one panel of kc x 32 (zero-padded past n) at a time into a 64-byte
 *    aligned per-thread buffer that stays in L1 while every row tile of C runs over it;
 *    tb = 1 packs through 16 x 16 in-register transposes (AVX-512). Software pipeline:
 *    while the row tiles run over panel q, each first packs its slice of panel q + 1 into
 *    the other half of the buffer, so that B's loads overlap the FMAs.
 *  - op(A): where the block has many panels (the wide outputs, n = 2000) the MC x kc block
 *    of A is packed once into MR-interleaved micro-panels (one contiguous stream per tile);
 *    where it has few (dX: n = 128, k = 2000) the kernel broadcasts straight from A (rows of
 *    A with ta = 0, MR contiguous floats per p with ta = 1), which saves packing 1 MB of A.
 *  - The first column panel is narrowed (17 .. 31 columns) where that puts the others on the
 *    64-byte lines of C (rows of a multiple of 16 floats): unaligned C otherwise splits
 *    every load and store of the tile across two lines (~10% with two threads).
 *  - Threads: the panels of 32 columns are split in contiguous ranges across the OpenMP
 *    team; where there are fewer panels than threads the rows are split in 8-row tiles.
 *    Never k. Inside a parallel region, or below AV_GEMM_PAR_MIN multiply-adds, it runs on
 *    the calling thread. */
#include "src/gemm.h"

#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "src/isa.h"
#include "src/util.h"
#ifdef AV_ISA_X86
#include <immintrin.h>
#endif

#ifndef AV_GEMM_KC
#define AV_GEMM_KC 256 /* deepest KC block: a packed panel of B is KC x 32 floats = 32 KiB */
#endif
enum { MR = 8, NR = 32, KC = AV_GEMM_KC, MC = 256 };
/* below this many multiply-adds one thread is faster than waking the team */
#define AV_GEMM_PAR_MIN (1 << 18)
/* A is packed where a block has at least this many panels of B to reuse it over */
#define AV_GEMM_PACK_A_PANELS 8

/* ---------------------------------------------------------------- per-thread buffers */

/* One allocation per thread, made on its first call and freed when the thread exits:
 * two packed panels of op(B) (2 x KC x NR) and a packed block of op(A) (MC x KC). */
enum { BUF_B = 2 * KC * NR, BUF_FLOATS = BUF_B + MC * KC };
static _Thread_local float *thread_buf;
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;
static int buf_key_ok;

static void buf_free(void *p) {
    free(p);
}
static void buf_key_init(void) {
    buf_key_ok = pthread_key_create(&buf_key, buf_free) == 0;
}

static float *get_buf(void) {
    if (!thread_buf) {
        pthread_once(&buf_once, buf_key_init);
        thread_buf = av_calloc_aligned(BUF_FLOATS, sizeof(float));
        if (buf_key_ok) pthread_setspecific(buf_key, thread_buf);
    }
    return thread_buf;
}

#define AV_INLINE __attribute__((always_inline)) inline

typedef void (*kernel_fn)(int64_t kc, const float *a, int64_t lda, const float *bp, float *c,
                          int64_t ldc, float beta, const float *bias, int nc);
/* tb = 0: bp[p][j] = b[p * ldb + j]; tb = 1: bp[p][j] = b[j * ldb + p]; for p < kc, j < nc,
 * zero for nc <= j < NR */
typedef void (*pack_b_fn)(int64_t kc, int64_t nc, const float *b, int64_t ldb, float *bp);
/* The MR-row tile of op(A) at rows [0, mr), depths [0, kc) into ap[p][r] (MR floats per p,
 * zero past mr): the kernel then reads it as a ta = 1 tile with lda = MR. */
typedef void (*pack_a_fn)(int ta, int64_t mr, int64_t kc, const float *a, int64_t lda, float *ap);

/* One path's kernels: kernel[ta][nv - 1][mr - 1] computes an mr x 16 nv tile (nv = 1 where
 * the panel has at most 16 columns). */
typedef struct {
    kernel_fn kernel[2][2][MR];
    pack_b_fn pack_b_n, pack_b_t;
    pack_a_fn pack_a_tile;
    int pack_a_always; /* 1: A packed whatever the panel count (its kernel reads A packed best) */
} GemmPath;

/* The kernel table of one path: kernel_##P##_TA_NV_R, R = 1 .. 8 rows */
#define AV_KDEF(P, TA, NV, R)                                                                      \
    static TARGET_##P void kernel_##P##_##TA##_##NV##_##R(int64_t kc, const float *a, int64_t lda, \
                                                          const float *bp, float *c, int64_t ldc,  \
                                                          float beta, const float *bias, int nc) { \
        kernel_tpl_##P(R, NV, TA, kc, a, lda, bp, c, ldc, beta, bias, nc);                         \
    }
#define AV_KDEF_R(P, TA, NV)                                                                       \
    AV_KDEF(P, TA, NV, 1)                                                                          \
    AV_KDEF(P, TA, NV, 2)                                                                          \
    AV_KDEF(P, TA, NV, 3)                                                                          \
    AV_KDEF(P, TA, NV, 4)                                                                          \
    AV_KDEF(P, TA, NV, 5)                                                                          \
    AV_KDEF(P, TA, NV, 6)                                                                          \
    AV_KDEF(P, TA, NV, 7)                                                                          \
    AV_KDEF(P, TA, NV, 8)
#define AV_KDEFS(P) AV_KDEF_R(P, 0, 1) AV_KDEF_R(P, 0, 2) AV_KDEF_R(P, 1, 1) AV_KDEF_R(P, 1, 2)
#define AV_KROW(P, TA, NV)                                                                         \
    {                                                                                              \
        kernel_##P##_##TA##_##NV##_1, kernel_##P##_##TA##_##NV##_2, kernel_##P##_##TA##_##NV##_3,  \
            kernel_##P##_##TA##_##NV##_4, kernel_##P##_##TA##_##NV##_5,                            \
            kernel_##P##_##TA##_##NV##_6, kernel_##P##_##TA##_##NV##_7,                            \
            kernel_##P##_##TA##_##NV##_8                                                           \
    }
#define AV_KTABLE(P)                                                                               \
    {                                                                                              \
        {AV_KROW(P, 0, 1), AV_KROW(P, 0, 2)}, {                                                    \
            AV_KROW(P, 1, 1), AV_KROW(P, 1, 2)                                                     \
        }                                                                                          \
    }
_Static_assert(MR == 8, "the kernel tables and the packing of A are written for MR = 8");

/* ================================================================ AVX-512 */
#ifdef AV_ISA_X86
#define TARGET_avx512 __attribute__((target("avx512f,avx512vl,fma")))
#define AV_AVX512 TARGET_avx512

/* ---------------------------------------------------------------- micro-kernel */

/* C[mr x nc] = acc + beta C, acc = sum over p < kc of op(A)[r][p] * bp[p][0..NR).
 * a points at op(A)[0][0] of the tile: element (r, p) is a[r * lda + p] (TA = 0) or
 * a[p * lda + r] (TA = 1). NV = 1 computes only the first 16 columns (nc <= 16). */
static AV_INLINE AV_AVX512 void kernel_tpl_avx512(const int mr, const int nv, const int ta,
                                                  int64_t kc, const float *a, int64_t lda,
                                                  const float *bp, float *c, int64_t ldc,
                                                  float beta, const float *bias, int nc) {
    __m512 acc[MR][2];
#pragma GCC unroll 16
    for (int r = 0; r < mr; r++) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + NR - 1), _MM_HINT_T0);
    }
    if (ta) {
#pragma GCC unroll 2
        for (int64_t p = 0; p < kc; p++) {
            __m512 b0 = _mm512_load_ps(bp + p * NR);
            __m512 b1 = _mm512_load_ps(bp + p * NR + 16);
            const float *ap = a + p * lda;
#pragma GCC unroll 16
            for (int r = 0; r < mr; r++) {
                __m512 ar = _mm512_set1_ps(ap[r]);
                acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
                if (nv > 1) acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
            }
        }
    } else {
#pragma GCC unroll 2
        for (int64_t p = 0; p < kc; p++) {
            __m512 b0 = _mm512_load_ps(bp + p * NR);
            __m512 b1 = _mm512_load_ps(bp + p * NR + 16);
#pragma GCC unroll 16
            for (int r = 0; r < mr; r++) {
                __m512 ar = _mm512_set1_ps(a[r * lda + p]);
                acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
                if (nv > 1) acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
            }
        }
    }
    __mmask16 m0 = nc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
    __mmask16 m1 = nc >= 32  ? (__mmask16)0xFFFF
                   : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1)
                             : (__mmask16)0;
    if (bias) { /* C = acc + bias: what bias rows and then beta = 1 would give, bitwise */
        __m512 b0 = _mm512_maskz_loadu_ps(m0, bias), b1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) {
            _mm512_mask_storeu_ps(c + r * ldc, m0, _mm512_add_ps(b0, acc[r][0]));
            if (nv > 1) _mm512_mask_storeu_ps(c + r * ldc + 16, m1, _mm512_add_ps(b1, acc[r][1]));
        }
    } else if (beta == 0.0f) {
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) {
            _mm512_mask_storeu_ps(c + r * ldc, m0, acc[r][0]);
            if (nv > 1) _mm512_mask_storeu_ps(c + r * ldc + 16, m1, acc[r][1]);
        }
    } else {
        __m512 bv = _mm512_set1_ps(beta);
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) {
            float *cr = c + r * ldc;
            _mm512_mask_storeu_ps(cr, m0,
                                  _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(m0, cr), acc[r][0]));
            if (nv > 1)
                _mm512_mask_storeu_ps(
                    cr + 16, m1,
                    _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(m1, cr + 16), acc[r][1]));
        }
    }
}

AV_KDEFS(avx512)

/* ---------------------------------------------------------------- packing op(B) */

static AV_INLINE AV_AVX512 __mmask16 mask_first(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

static AV_AVX512 void pack_b_n_avx512(int64_t kc, int64_t nc, const float *b, int64_t ldb,
                                      float *bp) {
    __mmask16 m0 = mask_first(nc), m1 = mask_first(nc - 16);
    if (nc == NR) {
        for (int64_t p = 0; p < kc; p++) {
            _mm512_store_ps(bp + p * NR, _mm512_loadu_ps(b + p * ldb));
            _mm512_store_ps(bp + p * NR + 16, _mm512_loadu_ps(b + p * ldb + 16));
        }
    } else {
        for (int64_t p = 0; p < kc; p++) {
            _mm512_store_ps(bp + p * NR, _mm512_maskz_loadu_ps(m0, b + p * ldb));
            _mm512_store_ps(bp + p * NR + 16, _mm512_maskz_loadu_ps(m1, b + p * ldb + 16));
        }
    }
}

/* Transposes the 16 x 16 block r in place: r[j] lane i <- r[i] lane j. */
static AV_INLINE AV_AVX512 void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) {
        t[2 * q] = _mm512_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm512_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
    /* u[4g + c], 128-bit lane L = column 4L + c of rows 4g .. 4g + 3 */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

static AV_AVX512 void pack_b_t_avx512(int64_t kc, int64_t nc, const float *b, int64_t ldb,
                                      float *bp) {
    __m512 r[16];
    for (int64_t p0 = 0; p0 < kc; p0 += 16) {
        int64_t pk = kc - p0 < 16 ? kc - p0 : 16;
        __mmask16 mk = mask_first(pk);
        for (int h = 0; h < NR / 16; h++) {
            int64_t rows = nc - 16 * h;
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++)
                r[j] = j < rows ? _mm512_maskz_loadu_ps(mk, b + (16 * h + j) * ldb + p0)
                                : _mm512_setzero_ps();
            transpose16(r);
            if (pk == 16) {
#pragma GCC unroll 16
                for (int p = 0; p < 16; p++) _mm512_store_ps(bp + (p0 + p) * NR + 16 * h, r[p]);
            } else {
                for (int p = 0; p < pk; p++) _mm512_store_ps(bp + (p0 + p) * NR + 16 * h, r[p]);
            }
        }
    }
}

/* ---------------------------------------------------------------- packing op(A) */

static AV_AVX512 void pack_a_tile_avx512(int ta, int64_t mr, int64_t kc, const float *a,
                                         int64_t lda, float *ap) {
    if (ta) { /* a[p * lda + r]: MR contiguous floats per p */
        __mmask16 mr_mask = mask_first(mr);
        for (int64_t p = 0; p < kc; p++)
            _mm512_mask_storeu_ps(ap + p * MR, (__mmask16)0xFF,
                                  _mm512_maskz_loadu_ps(mr_mask, a + p * lda));
        return;
    }
    __m512 r[16]; /* a[r * lda + p]: 16 x 16 transposes of the MR rows and 8 zero rows */
    for (int64_t p0 = 0; p0 < kc; p0 += 16) {
        int64_t pk = kc - p0 < 16 ? kc - p0 : 16;
        __mmask16 mk = mask_first(pk);
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            r[j] = j < mr ? _mm512_maskz_loadu_ps(mk, a + j * lda + p0) : _mm512_setzero_ps();
        transpose16(r);
        for (int p = 0; p < pk; p++)
            _mm512_mask_storeu_ps(ap + (p0 + p) * MR, (__mmask16)0xFF, r[p]);
    }
}

static const GemmPath path_avx512 = {AV_KTABLE(avx512), pack_b_n_avx512, pack_b_t_avx512,
                                     pack_a_tile_avx512, 0};

/* ================================================================ AVX2 + FMA */
#define TARGET_avx2 __attribute__((target("avx2,fma")))

/* The columns [0, cols) of 8 as a maskload / maskstore mask (cols may be <= 0 or >= 8) */
static AV_INLINE TARGET_avx2 __m256i mask8(int cols) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Stores rr rows of 16 accumulated columns: C = acc (+ bias, or + beta C), the first `cols`
 * columns only; the same operations as the AVX-512 store. */
static AV_INLINE TARGET_avx2 void store_avx2(int rr, __m256 acc[4][2], float *c, int64_t ldc,
                                             float beta, const float *bias, int cols) {
    __m256i m0 = mask8(cols), m1 = mask8(cols - 8);
    __m256 b0 = _mm256_setzero_ps(), b1 = b0, bv = _mm256_set1_ps(beta);
    if (bias) b0 = _mm256_maskload_ps(bias, m0), b1 = _mm256_maskload_ps(bias + 8, m1);
#pragma GCC unroll 4
    for (int r = 0; r < rr; r++) {
        float *cr = c + r * ldc;
        __m256 v0 = acc[r][0], v1 = acc[r][1];
        if (bias) {
            v0 = _mm256_add_ps(b0, v0), v1 = _mm256_add_ps(b1, v1);
        } else if (beta != 0.0f) {
            v0 = _mm256_fmadd_ps(bv, _mm256_maskload_ps(cr, m0), v0);
            v1 = _mm256_fmadd_ps(bv, _mm256_maskload_ps(cr + 8, m1), v1);
        }
        if (cols >= 16) {
            _mm256_storeu_ps(cr, v0), _mm256_storeu_ps(cr + 8, v1);
        } else {
            _mm256_maskstore_ps(cr, m0, v0), _mm256_maskstore_ps(cr + 8, m1, v1);
        }
    }
}

/* The mr x 16 nv tile as 4-row x 16-column sub-tiles: 8 accumulators, two B rows and a
 * broadcast of A in registers; A and the packed B are read once per sub-tile from L1. */
static AV_INLINE TARGET_avx2 void kernel_tpl_avx2(const int mr, const int nv, const int ta,
                                                  int64_t kc, const float *a, int64_t lda,
                                                  const float *bp, float *c, int64_t ldc,
                                                  float beta, const float *bias, int nc) {
#pragma GCC unroll 2
    for (int r0 = 0; r0 < mr; r0 += 4) {
        const int rr = mr - r0 < 4 ? mr - r0 : 4;
#pragma GCC unroll 2
        for (int h = 0; h < nv; h++) {
            __m256 acc[4][2];
#pragma GCC unroll 4
            for (int r = 0; r < rr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
            const float *bh = bp + 16 * h;
            if (ta) {
                const float *ap = a + r0;
#pragma GCC unroll 2
                for (int64_t p = 0; p < kc; p++) {
                    __m256 b0 = _mm256_load_ps(bh + p * NR), b1 = _mm256_load_ps(bh + p * NR + 8);
#pragma GCC unroll 4
                    for (int r = 0; r < rr; r++) {
                        __m256 ar = _mm256_broadcast_ss(ap + p * lda + r);
                        acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
                    }
                }
            } else {
                const float *ar0 = a + r0 * lda;
#pragma GCC unroll 2
                for (int64_t p = 0; p < kc; p++) {
                    __m256 b0 = _mm256_load_ps(bh + p * NR), b1 = _mm256_load_ps(bh + p * NR + 8);
#pragma GCC unroll 4
                    for (int r = 0; r < rr; r++) {
                        __m256 ar = _mm256_broadcast_ss(ar0 + r * lda + p);
                        acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
                    }
                }
            }
            store_avx2(rr, acc, c + r0 * ldc + 16 * h, ldc, beta, bias ? bias + 16 * h : NULL,
                       nc - 16 * h);
        }
    }
}
AV_KDEFS(avx2)

/* Transposes the 8 x 8 block r in place: r[j] lane i <- r[i] lane j. */
static AV_INLINE TARGET_avx2 void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        t[2 * q] = _mm256_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm256_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
        u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

/* tb = 1 through 8 x 8 in-register transposes (the scalar loop cost ~10% of dX = dy W^T) */
static TARGET_avx2 void pack_b_t_avx2(int64_t kc, int64_t nc, const float *b, int64_t ldb,
                                      float *bp) {
    __m256 r[8];
    for (int64_t p0 = 0; p0 < kc; p0 += 8) {
        int pk = kc - p0 < 8 ? (int)(kc - p0) : 8;
        __m256i mk = mask8(pk);
        for (int h = 0; h < NR / 8; h++) {
            int64_t rows = nc - 8 * h;
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                r[j] = j < rows ? _mm256_maskload_ps(b + (8 * h + j) * ldb + p0, mk)
                                : _mm256_setzero_ps();
            transpose8(r);
            for (int p = 0; p < pk; p++) _mm256_store_ps(bp + (p0 + p) * NR + 8 * h, r[p]);
        }
    }
}
#endif /* AV_ISA_X86 */

/* ================================================================ generic C */
/* Plain C over 4-row x 8-column sub-tiles (32 accumulators: 8 SSE / NEON registers), loops
 * of fixed trip counts that the compiler unrolls and vectorises. `acc += a * b` is one FMA
 * where the target has it (GCC contracts it: -ffp-contract=fast is its default for C). */
#define TARGET_generic
static AV_INLINE void kernel_tpl_generic(const int mr, const int nv, const int ta, int64_t kc,
                                         const float *a, int64_t lda, const float *bp, float *c,
                                         int64_t ldc, float beta, const float *bias, int nc) {
#pragma GCC unroll 2
    for (int r0 = 0; r0 < mr; r0 += 4) {
        const int rr = mr - r0 < 4 ? mr - r0 : 4;
#pragma GCC unroll 4
        for (int q = 0; q < 2 * nv; q++) {
            float acc[4][8] = {{0}};
            const float *bq = bp + 8 * q;
            for (int64_t p = 0; p < kc; p++) {
                const float *bpp = bq + p * NR;
#pragma GCC unroll 4
                for (int r = 0; r < rr; r++) {
                    float ar = ta ? a[p * lda + r0 + r] : a[(r0 + r) * lda + p];
#pragma GCC unroll 8
                    for (int j = 0; j < 8; j++) acc[r][j] += ar * bpp[j];
                }
            }
            int cols = nc - 8 * q < 8 ? nc - 8 * q : 8;
            for (int r = 0; r < rr; r++) {
                float *cr = c + (r0 + r) * ldc + 8 * q;
                for (int j = 0; j < cols; j++)
                    cr[j] = bias           ? bias[8 * q + j] + acc[r][j]
                            : beta == 0.0f ? acc[r][j]
                                           : beta * cr[j] + acc[r][j];
            }
        }
    }
}
AV_KDEFS(generic)

/* The packing, in plain C: bodies compiled for AVX2 and for the baseline (AVX2 transposes
 * B with intrinsics, above). */
AV_ISA_BODY void pack_b_n_body(int64_t kc, int64_t nc, const float *b, int64_t ldb, float *bp) {
    for (int64_t p = 0; p < kc; p++) {
        const float *br = b + p * ldb;
        float *d = bp + p * NR;
        for (int64_t j = 0; j < NR; j++) d[j] = j < nc ? br[j] : 0.0f;
    }
}
AV_ISA_BODY void pack_b_t_body(int64_t kc, int64_t nc, const float *b, int64_t ldb, float *bp) {
    for (int64_t j = 0; j < NR; j++) {
        const float *bj = b + j * ldb;
        if (j < nc)
            for (int64_t p = 0; p < kc; p++) bp[p * NR + j] = bj[p];
        else
            for (int64_t p = 0; p < kc; p++) bp[p * NR + j] = 0.0f;
    }
}
AV_ISA_BODY void pack_a_tile_body(int ta, int64_t mr, int64_t kc, const float *a, int64_t lda,
                                  float *ap) {
    for (int64_t p = 0; p < kc; p++)
        for (int64_t r = 0; r < MR; r++)
            ap[p * MR + r] = r >= mr ? 0.0f : ta ? a[p * lda + r] : a[r * lda + p];
}
#define AV_PACKS(P)                                                                                \
    static TARGET_##P void pack_b_n_##P(int64_t kc, int64_t nc, const float *b, int64_t ldb,       \
                                        float *bp) {                                               \
        pack_b_n_body(kc, nc, b, ldb, bp);                                                         \
    }                                                                                              \
    static TARGET_##P void pack_a_tile_##P(int ta, int64_t mr, int64_t kc, const float *a,         \
                                           int64_t lda, float *ap) {                               \
        pack_a_tile_body(ta, mr, kc, a, lda, ap);                                                  \
    }
AV_PACKS(generic)
static void pack_b_t_generic(int64_t kc, int64_t nc, const float *b, int64_t ldb, float *bp) {
    pack_b_t_body(kc, nc, b, ldb, bp);
}
/* A always packed: the compiler vectorises the kernel's loads of A only from a packed tile */
static const GemmPath path_generic = {AV_KTABLE(generic), pack_b_n_generic, pack_b_t_generic,
                                      pack_a_tile_generic, 1};
#ifdef AV_ISA_X86
AV_PACKS(avx2)
static const GemmPath path_avx2 = {AV_KTABLE(avx2), pack_b_n_avx2, pack_b_t_avx2, pack_a_tile_avx2,
                                   0};
#endif

/* The kernels of the path av_isa() says. */
static const GemmPath *gemm_path(void) {
#ifdef AV_ISA_X86
    AvIsa isa = av_isa();
    if (isa == AV_ISA_AVX512) return &path_avx512;
    if (isa == AV_ISA_AVX2) return &path_avx2;
#endif
    return &path_generic;
}

/* ---------------------------------------------------------------- one thread's block */

/* The KC blocks of k: as many as KC needs, of equal depth, so they depend on k only. */
static int64_t depth_block(int64_t k) {
    int64_t nb = (k + KC - 1) / KC;
    return (k + nb - 1) / nb;
}

/* A panel of op(B): columns [jc, jc + nc), rows [pc, pc + kc), for the rows [ic, ic + mc) of C */
typedef struct {
    int64_t ic, mc, pc, kc, jc, nc;
} Panel;

/* The column panels of C: the first one `first` columns wide, the others NR. first < NR
 * where that makes the others start on a 64-byte line of C in every row (the
 * kernel's loads and stores of C then never split a line); which panels there are does not
 * change what is computed for an element of C. */
static int64_t first_panel(const float *c, int64_t ldc) {
    int64_t off = (int64_t)((uintptr_t)c % 64);
    if (ldc % 16 != 0 || off % 4 != 0 || off == 0) return NR;
    return NR - off / 4; /* 17 .. 31: the second panel starts on a line */
}
static int64_t panel_count(int64_t n, int64_t first) {
    return n <= first ? 1 : 1 + (n - first + NR - 1) / NR;
}
static int64_t panel_col(int64_t j, int64_t n, int64_t first) {
    int64_t col = j == 0 ? 0 : first + (j - 1) * NR;
    return col < n ? col : n;
}

/* The idx-th panel of an m x n x k block in the order they run: MC row blocks, then KC
 * blocks of k, then column panels. 0 past the last one. */
static int panel_at(int64_t idx, int64_t m, int64_t n, int64_t k, int64_t kb, int64_t first,
                    Panel *q) {
    int64_t nj = panel_count(n, first), np = (k + kb - 1) / kb, ni = (m + MC - 1) / MC;
    if (idx >= nj * np * ni) return 0;
    q->jc = panel_col(idx % nj, n, first);
    q->nc = panel_col(idx % nj + 1, n, first) - q->jc;
    q->pc = idx / nj % np * kb;
    q->ic = idx / (nj * np) * MC;
    q->kc = k - q->pc < kb ? k - q->pc : kb;
    q->mc = m - q->ic < MC ? m - q->ic : MC;
    return 1;
}

/* Packs rows [p0, p1) of panel q (p0 a multiple of 16) into its place in bp. */
static void pack_slice(const GemmPath *P, int tb, const Panel *q, const float *b, int64_t ldb,
                       int64_t p0, int64_t p1, float *bp) {
    if (tb)
        P->pack_b_t(p1 - p0, q->nc, b + q->jc * ldb + q->pc + p0, ldb, bp + p0 * NR);
    else
        P->pack_b_n(p1 - p0, q->nc, b + (q->pc + p0) * ldb + q->jc, ldb, bp + p0 * NR);
}

/* The rows of a panel split in `parts` slices of a multiple of 16. */
static int64_t slice_rows(int64_t kc, int64_t parts) {
    int64_t s = (kc + parts - 1) / parts;
    return (s + 15) / 16 * 16;
}

/* C[m x n] = op(A) op(B) + beta C on one thread; buf from get_buf(). Software pipeline
 * over the panels of B: while the row tiles of C run over panel q (packed in one half of
 * the buffer), each tile first packs its slice of panel q + 1 into the other half, so that
 * B's loads overlap the FMAs instead of stalling between panels. */
static void block_run(const GemmPath *P, int ta, int tb, int64_t m, int64_t n, int64_t k,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      const float *bias, float *c, int64_t ldc, float *buf) {
    float *bbuf[2] = {buf, buf + KC * NR}, *abuf = buf + BUF_B;
    int64_t kb = depth_block(k);
    int64_t first = first_panel(c, ldc);
    int pack_a = P->pack_a_always || panel_count(n, first) >= AV_GEMM_PACK_A_PANELS;
    Panel cur, nxt;
    if (!panel_at(0, m, n, k, kb, first, &cur)) return;
    pack_slice(P, tb, &cur, b, ldb, 0, cur.kc, bbuf[0]);
    for (int64_t idx = 0;; idx++) {
        int hn = panel_at(idx + 1, m, n, k, kb, first, &nxt);
        const float *bp = bbuf[idx & 1];
        float *bn = bbuf[(idx + 1) & 1];
        int64_t ntile = (cur.mc + MR - 1) / MR, sn = hn ? slice_rows(nxt.kc, ntile) : 0;
        if (pack_a && cur.jc == 0) /* first panel of an (ic, pc) block */
            for (int64_t t = 0; t < ntile; t++) {
                int64_t i = cur.ic + t * MR,
                        mr = cur.ic + cur.mc - i < MR ? cur.ic + cur.mc - i : MR;
                P->pack_a_tile(ta, mr, cur.kc, ta ? a + cur.pc * lda + i : a + i * lda + cur.pc,
                               lda, abuf + t * cur.kc * MR);
            }
        const kernel_fn *kr = P->kernel[pack_a || ta][cur.nc > 16];
        float bt = cur.pc == 0 ? beta : 1.0f;
        const float *bb = bias && cur.pc == 0 ? bias + cur.jc : NULL; /* first k block only */
        for (int64_t t = 0; t < ntile; t++) {
            if (hn && t * sn < nxt.kc)
                pack_slice(P, tb, &nxt, b, ldb, t * sn,
                           (t + 1) * sn < nxt.kc ? (t + 1) * sn : nxt.kc, bn);
            int64_t i = cur.ic + t * MR, mr = cur.ic + cur.mc - i < MR ? cur.ic + cur.mc - i : MR;
            float *ct = c + i * ldc + cur.jc;
            if (pack_a)
                kr[mr - 1](cur.kc, abuf + t * cur.kc * MR, MR, bp, ct, ldc, bt, bb, (int)cur.nc);
            else
                kr[mr - 1](cur.kc, ta ? a + cur.pc * lda + i : a + i * lda + cur.pc, lda, bp, ct,
                           ldc, bt, bb, (int)cur.nc);
        }
        if (!hn) break;
        cur = nxt;
    }
}

/* ---------------------------------------------------------------- driver */

/* Rows [*m0, *m1) and columns [*n0, *n1) of C for thread t of nt: contiguous ranges of NR
 * column panels, or of MR row tiles where there are fewer panels than threads. */
static void thread_range(int64_t m, int64_t n, const float *c, int64_t ldc, int t, int nt,
                         int64_t *m0, int64_t *m1, int64_t *n0, int64_t *n1) {
    int64_t first = first_panel(c, ldc), np = panel_count(n, first), mt = (m + MR - 1) / MR;
    *m0 = 0, *m1 = m, *n0 = 0, *n1 = n;
    if (np >= nt || np >= mt) {
        *n0 = panel_col(np * t / nt, n, first);
        *n1 = panel_col(np * (t + 1) / nt, n, first);
    } else {
        int64_t lo = mt * t / nt, hi = mt * (t + 1) / nt;
        *m0 = lo * MR < m ? lo * MR : m;
        *m1 = hi * MR < m ? hi * MR : m;
    }
}

/* C = beta C, or C rows = bias where there is one (k = 0). */
static void scale_or_fill(int64_t m, int64_t n, float beta, const float *bias, float *c,
                          int64_t ldc) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            c[i * ldc + j] = bias ? bias[j] : beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}

static void run_block(const GemmPath *P, int ta, int tb, int64_t m0, int64_t m1, int64_t n0,
                      int64_t n1, int64_t k, const float *a, int64_t lda, const float *b,
                      int64_t ldb, float beta, const float *bias, float *c, int64_t ldc) {
    if (m1 <= m0 || n1 <= n0) return;
    a += ta ? m0 : m0 * lda;
    b += tb ? n0 * ldb : n0;
    c += m0 * ldc + n0;
    if (bias) bias += n0;
    block_run(P, ta, tb, m1 - m0, n1 - n0, k, a, lda, b, ldb, beta, bias, c, ldc, get_buf());
}

static void sgemm_epilogue(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a,
                           int64_t lda, const float *b, int64_t ldb, float beta, const float *bias,
                           float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        scale_or_fill(m, n, beta, bias, c, ldc);
        return;
    }
    const GemmPath *P = gemm_path();
    if (omp_in_parallel() || omp_get_max_threads() == 1 ||
        (double)m * (double)n * (double)k < AV_GEMM_PAR_MIN) {
        run_block(P, ta, tb, 0, m, 0, n, k, a, lda, b, ldb, beta, bias, c, ldc);
        return;
    }
#pragma omp parallel
    {
        int64_t m0, m1, n0, n1;
        thread_range(m, n, c, ldc, omp_get_thread_num(), omp_get_num_threads(), &m0, &m1, &n0, &n1);
        run_block(P, ta, tb, m0, m1, n0, n1, k, a, lda, b, ldb, beta, bias, c, ldc);
    }
}

void av_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
              const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    sgemm_epilogue(ta, tb, m, n, k, a, lda, b, ldb, beta, NULL, c, ldc);
}

void av_sgemm_bias(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                   const float *b, int64_t ldb, const float *bias, float *c, int64_t ldc) {
    sgemm_epilogue(ta, tb, m, n, k, a, lda, b, ldb, 0.0f, bias, c, ldc);
}
