/* Which CPU path the kernels take (src/isa.h). */
#include "src/isa.h"

#include <stdlib.h>
#include <string.h>

#include "src/util.h"

int av_isa_current_ = -1;

static const char *const isa_names[] = {"generic", "avx2", "avx512"};

const char *av_isa_name(AvIsa isa) {
    return isa >= AV_ISA_GENERIC && isa <= AV_ISA_AVX512 ? isa_names[isa] : "?";
}

AvIsa av_isa_best(void) {
#ifdef AV_ISA_X86
    __builtin_cpu_init();
    /* the levels the kernels are compiled for, as the compiler defines them */
#if defined(__clang__) && __clang_major__ < 16
    /* older clang knows no level names here: the levels' vector features instead */
    int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
    int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
    if (v4) return AV_ISA_AVX512;
    if (v3) return AV_ISA_AVX2;
#else
    if (__builtin_cpu_supports("x86-64-v4")) return AV_ISA_AVX512;
    if (__builtin_cpu_supports("x86-64-v3")) return AV_ISA_AVX2;
#endif
#endif
    return AV_ISA_GENERIC;
}

AvIsa av_isa_set(AvIsa isa) {
    AvIsa best = av_isa_best();
    if (isa > best) isa = best;
    if (isa < AV_ISA_GENERIC) isa = AV_ISA_GENERIC;
    __atomic_store_n(&av_isa_current_, (int)isa, __ATOMIC_RELAXED);
    return isa;
}

/* ATLASVI_ISA's path; -1 for a value that names none, the best one where it is unset */
static int env_isa(const char *v) {
    if (!v || !*v) return (int)av_isa_best();
    for (int i = AV_ISA_GENERIC; i <= AV_ISA_AVX512; i++)
        if (!strcmp(v, isa_names[i])) return i;
    return -1;
}

int av_isa_from_env(char *err, int *lowered) {
    const char *v = getenv("ATLASVI_ISA");
    int want = env_isa(v);
    if (lowered) *lowered = 0;
    if (want < 0) {
        av_isa_set(av_isa_best());
        return av_err(err, "ATLASVI_ISA=%s: expected avx512, avx2 or generic", v);
    }
    AvIsa got = av_isa_set((AvIsa)want);
    if (lowered) *lowered = (int)got != want;
    return 0;
}

AvIsa av_isa_init_(void) {
    /* a value that names no path runs the best one here; the CLI reports it first */
    int want = env_isa(getenv("ATLASVI_ISA"));
    return av_isa_set(want < 0 ? av_isa_best() : (AvIsa)want);
}
