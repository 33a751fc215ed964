/* The sparse first layer of the encoders: y = log1p(counts) W (or counts W) for a CSR
 * minibatch, and its weight gradient dW += log1p(counts)^T dy. W is [in = genes, out].
 *
 * Forward, per cell: a tile of y_i (8 vector registers: 128 columns with AVX-512, 64 with
 * AVX2, 32 with SSE) stays in registers while the weight rows of the cell's genes stream
 * past it (from L2: W is 1 MB for 2000 genes x 128). Threads own blocks of cells.
 *
 * Backward: blocks of genes whose gradient rows fit in L1 (BLOCK_FLOATS); per block, cell
 * by cell, a tile of dy_i stays in registers while the gradient rows of the cell's genes
 * in the block are updated in place. Threads own blocks of genes. The gene blocks need
 * each cell's gene indices in increasing order, as every reader here writes them; where
 * they are not, one non-zero at a time.
 *
 * Every output element is summed by one thread in the order of the CSR (cells, then their
 * non-zeros), one fused multiply-add per term, so results do not depend on the number of
 * threads (nor on the blocking).
 *
 * Alignment: the parameter slab and the arena are 16-byte aligned, so 64-byte accesses to
 * rows would each straddle two cache lines. With AVX-512 and out a multiple of 16, all
 * rows have the same offset s (in floats) from a 64-byte boundary, and the 128-column
 * tile is kept as 9 registers aligned like the rows, the first and last accesses masked
 * to the row: every access to a gathered or updated row is then within one line (about
 * 1.4x faster from L2 than straddling loads). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math") /* see ops.c */
#endif
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "src/isa.h"
#include "src/mathx.h"
#include "src/ops_impl.h"
#include "src/util.h"

/* The kernels are written once (macros below) over a GCC vector type of VL floats and
 * compiled three times: 16 floats in an x86-64-v4 (AVX-512) function, 8 in an x86-64-v3
 * (AVX2) one, 4 in the baseline, the one av_isa() says picked at run time. (Not AV_DISPATCH over
 * one 64-byte vector type: GCC lowers such vectors through the stack in the clones whose registers
 * are narrower.) Loads and stores of the generic kernels go through memcpy, any alignment. The
 * helpers are macros since a function taking wide vectors by value draws GCC's -Wpsabi note on the
 * SSE baseline. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SPARSE_X86 1
#include <immintrin.h>
#define TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#endif
#define INLINE static inline __attribute__((always_inline))

typedef float vf16 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));

#define VLOAD(VT, p)                                                                               \
    (__extension__({                                                                               \
        VT vload_;                                                                                 \
        memcpy(&vload_, (p), sizeof vload_);                                                       \
        vload_;                                                                                    \
    }))
#define VSTORE(p, x)                                                                               \
    do {                                                                                           \
        __typeof__(x) vstore_ = (x);                                                               \
        memcpy((p), &vstore_, sizeof vstore_);                                                     \
    } while (0)

/* A non-zero: its gene and its value. */
typedef struct {
    int32_t row;
    float val;
} Entry;

/* the entries of n non-zeros: value log1p(count) (mode 1) or the count */
INLINE void entries(int mode, const int32_t *idx, const float *cnt, int64_t n, Entry *e) {
    if (mode == 1) {
#pragma omp simd
        for (int64_t q = 0; q < n; q++) e[q].val = av_log1pf_unit(cnt[q]);
    } else {
        for (int64_t q = 0; q < n; q++) e[q].val = cnt[q];
    }
    for (int64_t q = 0; q < n; q++) e[q].row = idx[q];
}

/* Forward tile: acc[0 : T VL] += sum_k val_k src[row_k * out + 0 : T VL], any alignment. */
#define GATHER_TILE(NAME, VT, T)                                                                   \
    INLINE void NAME(const Entry *e, int64_t m, const float *src, int64_t out, float *acc) {       \
        VT a[T];                                                                                   \
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) a[t] =                                 \
            VLOAD(VT, acc + t * (int)(sizeof(VT) / 4));                                            \
        for (int64_t k = 0; k < m; k++) {                                                          \
            const float *r = src + (int64_t)e[k].row * out;                                        \
            float vk = e[k].val;                                                                   \
            _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) a[t] +=                            \
                vk * VLOAD(VT, r + t * (int)(sizeof(VT) / 4));                                     \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++)                                        \
            VSTORE(acc + t * (int)(sizeof(VT) / 4), a[t]);                                         \
    }

/* the last columns, fewer than one vector (width of them) */
INLINE void gather_tail(const Entry *e, int64_t m, const float *src, int64_t out, int64_t width,
                        float *acc) {
    float a[16];
    memcpy(a, acc, sizeof(float) * (size_t)width);
    for (int64_t k = 0; k < m; k++) {
        const float *r = src + (int64_t)e[k].row * out;
        float vk = e[k].val;
        for (int64_t o = 0; o < width; o++) a[o] += vk * r[o];
    }
    memcpy(acc, a, sizeof(float) * (size_t)width);
}

#ifdef SPARSE_X86
/* The forward 128-column tile for rows that start s floats (0 < s < 16) past a 64-byte
 * boundary: register j holds columns 16 j - s .. 16 j - s + 15, so that every load of a
 * row is aligned; lanes outside the row stay zero (masked loads touch nothing outside it).
 * Addresses go through integers: a row's aligned start may lie before the array. */
TARGET_V4 INLINE void gather_shifted_avx512(const Entry *e, int64_t m, const float *src,
                                            int64_t out, float *acc, int s) {
    const __mmask16 m0 = (__mmask16)(0xffffu << s), m8 = (__mmask16)((1u << s) - 1u);
    float *f = (float *)((uintptr_t)acc - sizeof(float) * (size_t)s);
    __m512 a0 = _mm512_maskz_loadu_ps(m0, f), a1 = _mm512_loadu_ps(f + 16);
    __m512 a2 = _mm512_loadu_ps(f + 32), a3 = _mm512_loadu_ps(f + 48);
    __m512 a4 = _mm512_loadu_ps(f + 64), a5 = _mm512_loadu_ps(f + 80);
    __m512 a6 = _mm512_loadu_ps(f + 96), a7 = _mm512_loadu_ps(f + 112);
    __m512 a8 = _mm512_maskz_loadu_ps(m8, f + 128);
    const uintptr_t base = (uintptr_t)src - sizeof(float) * (size_t)s;
    for (int64_t k = 0; k < m; k++) {
        const float *r = (const float *)(base + sizeof(float) * (size_t)((int64_t)e[k].row * out));
        __m512 vk = _mm512_set1_ps(e[k].val);
        a0 = _mm512_fmadd_ps(vk, _mm512_maskz_load_ps(m0, r), a0);
        a1 = _mm512_fmadd_ps(vk, _mm512_load_ps(r + 16), a1);
        a2 = _mm512_fmadd_ps(vk, _mm512_load_ps(r + 32), a2);
        a3 = _mm512_fmadd_ps(vk, _mm512_load_ps(r + 48), a3);
        a4 = _mm512_fmadd_ps(vk, _mm512_load_ps(r + 64), a4);
        a5 = _mm512_fmadd_ps(vk, _mm512_load_ps(r + 80), a5);
        a6 = _mm512_fmadd_ps(vk, _mm512_load_ps(r + 96), a6);
        a7 = _mm512_fmadd_ps(vk, _mm512_load_ps(r + 112), a7);
        a8 = _mm512_fmadd_ps(vk, _mm512_maskz_load_ps(m8, r + 128), a8);
    }
    _mm512_mask_storeu_ps(f, m0, a0), _mm512_storeu_ps(f + 16, a1);
    _mm512_storeu_ps(f + 32, a2), _mm512_storeu_ps(f + 48, a3);
    _mm512_storeu_ps(f + 64, a4), _mm512_storeu_ps(f + 80, a5);
    _mm512_storeu_ps(f + 96, a6), _mm512_storeu_ps(f + 112, a7);
    _mm512_mask_storeu_ps(f + 128, m8, a8);
}
#endif

/* Backward tile: gw[row_k * out + 0 : T VL] += val_k d[0 : T VL] for each k, any alignment. */
#define SCATTER_TILE(NAME, VT, T)                                                                  \
    INLINE void NAME(const Entry *e, int64_t m, const float *d, int64_t out, float *gw) {          \
        VT a[T];                                                                                   \
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) a[t] =                                 \
            VLOAD(VT, d + t * (int)(sizeof(VT) / 4));                                              \
        for (int64_t k = 0; k < m; k++) {                                                          \
            float *r = gw + (int64_t)e[k].row * out;                                               \
            float vk = e[k].val;                                                                   \
            _Pragma("GCC unroll 8") for (int t = 0; t < T; t++)                                    \
                VSTORE(r + t * (int)(sizeof(VT) / 4),                                              \
                       VLOAD(VT, r + t * (int)(sizeof(VT) / 4)) + vk * a[t]);                      \
        }                                                                                          \
    }

INLINE void scatter_tail(const Entry *e, int64_t m, const float *d, int64_t out, int64_t width,
                         float *gw) {
    for (int64_t k = 0; k < m; k++) {
        float *r = gw + (int64_t)e[k].row * out;
        float vk = e[k].val;
        for (int64_t o = 0; o < width; o++) r[o] += vk * d[o];
    }
}

#ifdef SPARSE_X86
/* The backward 128-column tile for gradient rows s floats (0 < s < 16) past a 64-byte
 * boundary: d's tile is held in registers aligned like those rows, each row is read and
 * written with aligned accesses, the first and last masked to the row (so that no lane of
 * a neighbouring row, maybe another thread's, is written). */
TARGET_V4 INLINE void scatter_shifted_avx512(const Entry *e, int64_t m, const float *d, int64_t out,
                                             float *gw, int s) {
    const __mmask16 m0 = (__mmask16)(0xffffu << s), m8 = (__mmask16)((1u << s) - 1u);
    const float *f = (const float *)((uintptr_t)d - sizeof(float) * (size_t)s);
    __m512 d0 = _mm512_maskz_loadu_ps(m0, f), d1 = _mm512_loadu_ps(f + 16);
    __m512 d2 = _mm512_loadu_ps(f + 32), d3 = _mm512_loadu_ps(f + 48);
    __m512 d4 = _mm512_loadu_ps(f + 64), d5 = _mm512_loadu_ps(f + 80);
    __m512 d6 = _mm512_loadu_ps(f + 96), d7 = _mm512_loadu_ps(f + 112);
    __m512 d8 = _mm512_maskz_loadu_ps(m8, f + 128);
    const uintptr_t base = (uintptr_t)gw - sizeof(float) * (size_t)s;
    for (int64_t k = 0; k < m; k++) {
        float *r = (float *)(base + sizeof(float) * (size_t)((int64_t)e[k].row * out));
        __m512 vk = _mm512_set1_ps(e[k].val);
        _mm512_mask_store_ps(r, m0, _mm512_fmadd_ps(vk, d0, _mm512_maskz_load_ps(m0, r)));
        _mm512_store_ps(r + 16, _mm512_fmadd_ps(vk, d1, _mm512_load_ps(r + 16)));
        _mm512_store_ps(r + 32, _mm512_fmadd_ps(vk, d2, _mm512_load_ps(r + 32)));
        _mm512_store_ps(r + 48, _mm512_fmadd_ps(vk, d3, _mm512_load_ps(r + 48)));
        _mm512_store_ps(r + 64, _mm512_fmadd_ps(vk, d4, _mm512_load_ps(r + 64)));
        _mm512_store_ps(r + 80, _mm512_fmadd_ps(vk, d5, _mm512_load_ps(r + 80)));
        _mm512_store_ps(r + 96, _mm512_fmadd_ps(vk, d6, _mm512_load_ps(r + 96)));
        _mm512_store_ps(r + 112, _mm512_fmadd_ps(vk, d7, _mm512_load_ps(r + 112)));
        _mm512_mask_store_ps(r + 128, m8,
                             _mm512_fmadd_ps(vk, d8, _mm512_maskz_load_ps(m8, r + 128)));
    }
}
#endif

/* the 128-column tiles: shifted where the ISA has them (AVX-512) and the rows need it */
#define UNSHIFTED(FN, e, m, src, out, acc, s) FN(e, m, src, out, acc)
#define SHIFTED_AVX512(FN, e, m, src, out, acc, s)                                                 \
    do {                                                                                           \
        if (s)                                                                                     \
            gather_shifted_avx512(e, m, src, out, acc, s);                                         \
        else                                                                                       \
            FN(e, m, src, out, acc);                                                               \
    } while (0)

#define SCATTER_UNSHIFTED(FN, e, m, d, out, gw, s) FN(e, m, d, out, gw)
#define SCATTER_SHIFTED_AVX512(FN, e, m, d, out, gw, s)                                            \
    do {                                                                                           \
        if (s)                                                                                     \
            scatter_shifted_avx512(e, m, d, out, gw, s);                                           \
        else                                                                                       \
            FN(e, m, d, out, gw);                                                                  \
    } while (0)

/* Whole rows of out columns: tiles of 8, 4, 2, 1 vectors, then the tail; the same driver
 * for the gather (forward: src rows into acc) and the scatter (backward: d into the
 * gradient rows) with KIND gather or scatter. s: the gathered or updated rows' offset in
 * floats from a 64-byte boundary where all rows share it, else 0. */
#define ROW_DRIVER(KIND, SFX, VT, TARGET, SHIFTED8)                                                \
    TARGET INLINE void KIND##_row_##SFX(const Entry *e, int64_t m, const float *p, int64_t out,    \
                                        float *q, int s) {                                         \
        (void)s;                                                                                   \
        const int64_t vl = (int64_t)(sizeof(VT) / 4);                                              \
        int64_t o = 0;                                                                             \
        for (; o + 8 * vl <= out; o += 8 * vl)                                                     \
            SHIFTED8(KIND##8_##SFX, e, m, p + o, out, q + o, s);                                   \
        if (o + 4 * vl <= out) KIND##4_##SFX(e, m, p + o, out, q + o), o += 4 * vl;                \
        if (o + 2 * vl <= out) KIND##2_##SFX(e, m, p + o, out, q + o), o += 2 * vl;                \
        if (o + vl <= out) KIND##1_##SFX(e, m, p + o, out, q + o), o += vl;                        \
        if (o < out) KIND##_tail(e, m, p + o, out, out - o, q + o);                                \
    }
#define ROWS(SFX, VT, TARGET, SHIFTED8, SCATTER8)                                                  \
    GATHER_TILE(gather8_##SFX, VT, 8)                                                              \
    GATHER_TILE(gather4_##SFX, VT, 4)                                                              \
    GATHER_TILE(gather2_##SFX, VT, 2)                                                              \
    GATHER_TILE(gather1_##SFX, VT, 1)                                                              \
    ROW_DRIVER(gather, SFX, VT, TARGET, SHIFTED8)                                                  \
    SCATTER_TILE(scatter8_##SFX, VT, 8)                                                            \
    SCATTER_TILE(scatter4_##SFX, VT, 4)                                                            \
    SCATTER_TILE(scatter2_##SFX, VT, 2)                                                            \
    SCATTER_TILE(scatter1_##SFX, VT, 1)                                                            \
    ROW_DRIVER(scatter, SFX, VT, TARGET, SCATTER8)

/* Forward of cells [i0, i1): y_i += sum_k v_k W[idx_k, :], VALUES_BLOCK entries at a time.
 * Backward: prepare (entries, block offsets), then the gradient rows of gene blocks. */
#define VALUES_BLOCK 1024
#define KERNELS(SFX, VT, TARGET, SHIFTED8, SCATTER8)                                               \
    ROWS(SFX, VT, TARGET, SHIFTED8, SCATTER8)                                                      \
    TARGET static void forward_##SFX(int mode, const AvBatch *bt, int64_t i0, int64_t i1,          \
                                     const float *wt, int64_t out, float *y, int s) {              \
        Entry ent[VALUES_BLOCK];                                                                   \
        for (int64_t i = i0; i < i1; i++) {                                                        \
            int64_t a = bt->indptr[i], e = bt->indptr[i + 1];                                      \
            for (int64_t k0 = a; k0 < e; k0 += VALUES_BLOCK) {                                     \
                int64_t m = e - k0 < VALUES_BLOCK ? e - k0 : VALUES_BLOCK;                         \
                entries(mode, bt->indices + k0, bt->counts + k0, m, ent);                          \
                gather_row_##SFX(ent, m, wt, out, y + i * out, s);                                 \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* cells [i0, i1): their entries, and where each block of 2^bsh genes starts in each           \
     * (bnd: nb + 1 offsets per cell, from the cell's first non-zero) */                           \
    TARGET static void prepare_##SFX(int mode, const AvBatch *bt, int64_t i0, int64_t i1, int bsh, \
                                     int64_t nb, Entry *ent, int32_t *bnd) {                       \
        const int64_t base = bt->indptr[0];                                                        \
        for (int64_t i = i0; i < i1; i++) {                                                        \
            int64_t a = bt->indptr[i], m = bt->indptr[i + 1] - a;                                  \
            const int32_t *x = bt->indices + a;                                                    \
            int32_t *c = bnd + i * (nb + 1);                                                       \
            entries(mode, x, bt->counts + a, m, ent + (a - base));                                 \
            memset(c, 0, sizeof(int32_t) * (size_t)(nb + 1));                                      \
            for (int64_t k = 0; k < m; k++) c[(x[k] >> bsh) + 1]++;                                \
            for (int64_t b = 0; b < nb; b++) c[b + 1] += c[b];                                     \
        }                                                                                          \
    }                                                                                              \
    /* the gradient rows of gene blocks [b0, b1): block by block, cell by cell */                  \
    TARGET static void backward_##SFX(const AvBatch *bt, int64_t n, int64_t b0, int64_t b1,        \
                                      int64_t nb, const Entry *ent, const int32_t *bnd,            \
                                      const float *gy, float *gw, int64_t out, int s) {            \
        const int64_t base = bt->indptr[0];                                                        \
        for (int64_t b = b0; b < b1; b++)                                                          \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const int32_t *c = bnd + i * (nb + 1);                                             \
                if (c[b + 1] > c[b])                                                               \
                    scatter_row_##SFX(ent + (bt->indptr[i] - base) + c[b], c[b + 1] - c[b],        \
                                      gy + i * out, out, gw, s);                                   \
            }                                                                                      \
    }                                                                                              \
    /* unsorted cells: genes [g0, g1), one non-zero at a time */                                   \
    TARGET static void backward_unsorted_##SFX(const AvBatch *bt, int64_t n, int64_t g0,           \
                                               int64_t g1, const Entry *ent, const float *gy,      \
                                               float *gw, int64_t out, int s) {                    \
        const int64_t base = bt->indptr[0];                                                        \
        for (int64_t i = 0; i < n; i++)                                                            \
            for (int64_t k = bt->indptr[i] - base; k < bt->indptr[i + 1] - base; k++)              \
                if (ent[k].row >= g0 && ent[k].row < g1)                                           \
                    scatter_row_##SFX(ent + k, 1, gy + i * out, out, gw, s);                       \
    }

KERNELS(sse, vf4, , UNSHIFTED, SCATTER_UNSHIFTED)
#ifdef SPARSE_X86
KERNELS(avx2, vf8, TARGET_V3, UNSHIFTED, SCATTER_UNSHIFTED)
KERNELS(avx512, vf16, TARGET_V4, SHIFTED_AVX512, SCATTER_SHIFTED_AVX512)
#endif

/* the path av_isa() says: generic is the SSE baseline on x86-64 (NEON / SVE elsewhere) */
typedef enum { ISA_SSE = AV_ISA_GENERIC, ISA_AVX2 = AV_ISA_AVX2, ISA_AVX512 = AV_ISA_AVX512 } Isa;
static Isa isa(void) {
    return (Isa)av_isa();
}

/* the offset in floats of src's rows from a 64-byte boundary where all rows share it */
static int row_shift(const float *src, int64_t out) {
    return out % 16 ? 0 : (int)(((uintptr_t)src / sizeof(float)) % 16);
}

void av_sparse_linear_forward(int mode, const AvBatch *bt, int64_t n, const float *wt, int64_t out,
                              float *y) {
    Isa s = isa();
    (void)s; /* only x86-64 has more than one path */
    int shift = row_shift(wt, out);
#pragma omp parallel
    {
        /* contiguous blocks of cells, as schedule(static) */
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t i0 = n * t / nt, i1 = n * (t + 1) / nt;
#ifdef SPARSE_X86
        if (s == ISA_AVX512)
            forward_avx512(mode, bt, i0, i1, wt, out, y, shift);
        else if (s == ISA_AVX2)
            forward_avx2(mode, bt, i0, i1, wt, out, y, shift);
        else
#endif
            forward_sse(mode, bt, i0, i1, wt, out, y, shift);
    }
}

/* A block of gradient rows: 32 KB, to stay in L1 while the cells' non-zeros in it update it
 * (16 KB and 128 KB blocks were slower; 64 KB as fast). */
#define BLOCK_FLOATS 8192

/* Scratch kept by the calling thread between calls: a fresh allocation of this size
 * would be new pages, faulted in on every step. */
static _Thread_local void *scratch;
static _Thread_local size_t scratch_bytes;

void av_sparse_linear_backward(int mode, const AvBatch *bt, int64_t n, const float *gy, float *gw,
                               int64_t out) {
    if (n <= 0 || bt->indptr[n] <= bt->indptr[0]) return;
    const int64_t base = bt->indptr[0], nnz = bt->indptr[n] - base;
    /* the number of genes and whether each cell's genes increase */
    int32_t top = 0;
    int unsorted = 0;
    for (int64_t i = 0; i < n; i++) {
        const int32_t *x = bt->indices + bt->indptr[i];
        int64_t m = bt->indptr[i + 1] - bt->indptr[i];
        for (int64_t k = 0; k < m; k++) top = x[k] > top ? x[k] : top;
        for (int64_t k = 1; k < m; k++) unsorted |= x[k] < x[k - 1];
    }
    const int64_t genes = (int64_t)top + 1;
    int bsh = 0; /* blocks of 2^bsh genes */
    while (bsh < 20 && ((int64_t)2 << bsh) * out <= BLOCK_FLOATS) bsh++;
    if (unsorted) bsh = 31; /* one block: prepare's offsets are then unused */
    const int64_t nb = ((genes - 1) >> bsh) + 1;
    Isa s = isa();
    (void)s;
    int shift = row_shift(gw, out);

    size_t need = sizeof(Entry) * (size_t)nnz + sizeof(int32_t) * (size_t)(n * (nb + 1));
    if (need > scratch_bytes) {
        free(scratch);
        scratch = av_malloc(need);
        scratch_bytes = need;
    }
    Entry *ent = scratch;
    int32_t *bnd = (int32_t *)(ent + nnz);
#pragma omp parallel
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t i0 = n * t / nt, i1 = n * (t + 1) / nt;
#ifdef SPARSE_X86
        if (s == ISA_AVX512)
            prepare_avx512(mode, bt, i0, i1, bsh, nb, ent, bnd);
        else if (s == ISA_AVX2)
            prepare_avx2(mode, bt, i0, i1, bsh, nb, ent, bnd);
        else
#endif
            prepare_sse(mode, bt, i0, i1, bsh, nb, ent, bnd);
#pragma omp barrier
        if (unsorted) {
            int64_t g0 = genes * t / nt, g1 = genes * (t + 1) / nt;
#ifdef SPARSE_X86
            if (s == ISA_AVX512)
                backward_unsorted_avx512(bt, n, g0, g1, ent, gy, gw, out, shift);
            else if (s == ISA_AVX2)
                backward_unsorted_avx2(bt, n, g0, g1, ent, gy, gw, out, shift);
            else
#endif
                backward_unsorted_sse(bt, n, g0, g1, ent, gy, gw, out, shift);
        } else {
            /* contiguous runs of blocks holding about equal shares of the non-zeros: thread t
             * starts at the first block with at least t nnz / nt non-zeros before it */
            int64_t b0 = t == 0 ? 0 : nb, b1 = nb, lo = nnz * t / nt, hi = nnz * (t + 1) / nt;
            int64_t before = 0;
            for (int64_t b = 0; b <= nb; b++) {
                if (b > 0) {
                    before = 0;
                    for (int64_t i = 0; i < n; i++) before += bnd[i * (nb + 1) + b];
                }
                if (t > 0 && b0 == nb && before >= lo) b0 = b;
                if (t < nt - 1 && before >= hi) {
                    b1 = b;
                    break;
                }
            }
            if (b0 > b1) b0 = b1;
#ifdef SPARSE_X86
            if (s == ISA_AVX512)
                backward_avx512(bt, n, b0, b1, nb, ent, bnd, gy, gw, out, shift);
            else if (s == ISA_AVX2)
                backward_avx2(bt, n, b0, b1, nb, ent, bnd, gy, gw, out, shift);
            else
#endif
                backward_sse(bt, n, b0, b1, nb, ent, bnd, gy, gw, out, shift);
        }
    }
}
