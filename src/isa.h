/* The CPU paths of the kernels, chosen at run time.
 *
 * One binary runs on every x86-64 machine (the baseline build targets x86-64-v2): the hot
 * kernels are compiled three times, for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and
 * the baseline ("generic": plain C that the compiler vectorises for SSE, or for NEON /
 * SVE on ARM, where it is the only path), and av_isa() says which ones run: the best the
 * CPU has, lowered by the environment variable ATLASVI_ISA=avx512|avx2|generic.
 *
 * Within one path every result is bitwise independent of the thread count and of the
 * number of ranks. Between paths the GEMM agrees bitwise where both have FMA (AVX-512,
 * AVX2, ARM); element-wise kernels may differ in the last bits (FMA contraction on x86-64
 * generic, summation lanes of vector reductions). See docs/hpc.md. */
#ifndef AV_ISA_H
#define AV_ISA_H

typedef enum { AV_ISA_GENERIC = 0, AV_ISA_AVX2 = 1, AV_ISA_AVX512 = 2 } AvIsa;

/* The path the kernels take now. Cheap: one relaxed load after the first call. */
static inline AvIsa av_isa(void);

/* The best path this CPU can run (generic on non-x86 CPUs). */
AvIsa av_isa_best(void);

/* Sets the path (tests run every path in one process); a level above av_isa_best() is
 * lowered to it. Returns the path now in force. Not while kernels run. */
AvIsa av_isa_set(AvIsa isa);

/* "avx512", "avx2", "generic" */
const char *av_isa_name(AvIsa isa);

/* Reads ATLASVI_ISA once more and sets the path from it. Returns 0, or non-zero with one
 * line in err (AV_ERRLEN bytes) for a value that names no path. A named path the CPU
 * cannot run is lowered to av_isa_best(), and *lowered is set (NULL: not reported). */
int av_isa_from_env(char *err, int *lowered);

/* ---------------------------------------------------------------- multi-versioning */

/* A kernel is written once as `AV_ISA_BODY RET NAME_body(PARAMS)` (plain C, `omp simd`
 * loops) and AV_DISPATCH(RET, NAME, (PARAMS), (ARGS)) makes `static RET NAME(PARAMS)`,
 * which runs the body compiled for the path av_isa() says: always-inline bodies take the
 * instruction set of the function they are inlined into. AV_DISPATCH_VOID for void
 * kernels. On other CPUs NAME is the body itself. */
#define AV_ISA_BODY static inline __attribute__((always_inline))

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__CUDACC__)
#define AV_ISA_X86 1
#define AV_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#define AV_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))

#define AV_ISA_VERSIONS_(RET, NAME, PARAMS, CALL)                                                  \
    AV_TARGET_AVX512 static RET NAME##_avx512 PARAMS {                                             \
        CALL;                                                                                      \
    }                                                                                              \
    AV_TARGET_AVX2 static RET NAME##_avx2 PARAMS {                                                 \
        CALL;                                                                                      \
    }                                                                                              \
    static RET NAME##_generic PARAMS {                                                             \
        CALL;                                                                                      \
    }
#define AV_DISPATCH(RET, NAME, PARAMS, ARGS)                                                       \
    AV_ISA_VERSIONS_(RET, NAME, PARAMS, return NAME##_body ARGS)                                   \
    static RET NAME PARAMS {                                                                       \
        AvIsa isa_ = av_isa();                                                                     \
        return isa_ == AV_ISA_AVX512 ? NAME##_avx512 ARGS                                          \
               : isa_ == AV_ISA_AVX2 ? NAME##_avx2 ARGS                                            \
                                     : NAME##_generic ARGS;                                        \
    }
#define AV_DISPATCH_VOID(NAME, PARAMS, ARGS)                                                       \
    AV_ISA_VERSIONS_(void, NAME, PARAMS, NAME##_body ARGS)                                         \
    static void NAME PARAMS {                                                                      \
        AvIsa isa_ = av_isa();                                                                     \
        if (isa_ == AV_ISA_AVX512)                                                                 \
            NAME##_avx512 ARGS;                                                                    \
        else if (isa_ == AV_ISA_AVX2)                                                              \
            NAME##_avx2 ARGS;                                                                      \
        else                                                                                       \
            NAME##_generic ARGS;                                                                   \
    }
#else
#define AV_DISPATCH(RET, NAME, PARAMS, ARGS)                                                       \
    static RET NAME PARAMS {                                                                       \
        return NAME##_body ARGS;                                                                   \
    }
#define AV_DISPATCH_VOID(NAME, PARAMS, ARGS)                                                       \
    static void NAME PARAMS {                                                                      \
        NAME##_body ARGS;                                                                          \
    }
#endif

/* ---------------------------------------------------------------- inline part */

extern int av_isa_current_; /* -1 until the first av_isa() */
AvIsa av_isa_init_(void);
static inline AvIsa av_isa(void) {
    int s = __atomic_load_n(&av_isa_current_, __ATOMIC_RELAXED);
    return s >= 0 ? (AvIsa)s : av_isa_init_();
}

#endif
