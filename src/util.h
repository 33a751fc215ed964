/* Small shared helpers: error messages, checked allocation, timing. */
#ifndef AV_UTIL_H
#define AV_UTIL_H
#include <stddef.h>
#include <stdint.h>

/* Every fallible function fills a caller-provided buffer of this size with one line
 * (no trailing newline) and returns non-zero. The CLI prints it once, on one rank. */
#define AV_ERRLEN 512
int av_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void *av_malloc(size_t bytes); /* aborts with a message when memory runs out */
void *av_calloc(size_t n, size_t size);
/* zeroed, 64-byte aligned (a cache line, one AVX-512 vector); release with free() */
void *av_calloc_aligned(size_t n, size_t size);
void *av_realloc(void *p, size_t bytes);
char *av_strdup(const char *s);
void av_free_strings(char **s, int64_t n);
double av_now(void); /* monotonic seconds */

#endif
