#include "src/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int av_err(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, AV_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void *check(void *p, size_t bytes) {
    if (!p && bytes) {
        fprintf(stderr, "atlasvi: error: out of memory allocating %zu bytes\n", bytes);
        exit(2);
    }
    return p;
}

void *av_malloc(size_t bytes) {
    return check(malloc(bytes ? bytes : 1), bytes);
}
void *av_calloc(size_t n, size_t size) {
    return check(calloc(n ? n : 1, size ? size : 1), n * size);
}
void *av_calloc_aligned(size_t n, size_t size) {
    size_t bytes = n * size, padded = (bytes + 63) & ~(size_t)63;
    void *p = check(aligned_alloc(64, padded ? padded : 64), bytes);
    memset(p, 0, padded ? padded : 64);
    return p;
}
void *av_realloc(void *p, size_t bytes) {
    return check(realloc(p, bytes ? bytes : 1), bytes);
}
char *av_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = av_malloc(n);
    memcpy(d, s, n);
    return d;
}
void av_free_strings(char **s, int64_t n) {
    if (!s) return;
    for (int64_t i = 0; i < n; i++) free(s[i]);
    free(s);
}
double av_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
