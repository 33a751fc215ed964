/* src/mathx.h's branch-free exp on the inputs a diverging or hostile run feeds it: NaN and
 * infinities (a NaN used to shift a negative int left, undefined behaviour that UBSan
 * stops on in the sanitizer build), the clamped ends, and accuracy against expf. */
#include <math.h>
#include <stdio.h>

#include "src/mathx.h"

static int failures = 0;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #c);                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

int main(void) {
    volatile float nan = NAN, inf = INFINITY;
    CHECK(isnan(av_expf(nan)) && isnan(av_expf_nohi(nan)), "exp(NaN) is NaN");
    CHECK(isfinite(av_expf(inf)) && av_expf(inf) > 1e38f, "exp(+Inf) clamps: %g", av_expf(inf));
    CHECK(av_expf(-inf) >= 0 && av_expf(-inf) < 1e-37f, "exp(-Inf) clamps: %g", av_expf(-inf));
    for (float x = -87.0f; x <= 88.0f; x += 0.37f) {
        float want = expf(x), got = av_expf(x);
        CHECK(fabsf(got - want) <= 4e-7f * want, "exp(%g) = %g, want %g", x, got, want);
    }
    if (failures)
        fprintf(stderr, "test_mathx: %d failure(s)\n", failures);
    else
        printf("test_mathx: ok\n");
    return failures ? 1 : 0;
}
