/* Writing a file so that nobody sees it half written: the new contents go to a temporary
 * of a unique name (mkstemp) that is then renamed over the output. Outputs that are not
 * regular files (/dev/null, a device, a FIFO, /dev/stdout) are never renamed over: their
 * temporary lies in TMPDIR and its bytes are written into the output in place. */
#ifndef AV_IO_REPLACE_H
#define AV_IO_REPLACE_H
#include <stddef.h>

typedef struct {
    char *path, *tmp;
    int in_place; /* path is an existing file that is not a regular file */
} AvReplace;

/* Creates the (empty) temporary for path; fills err and returns non-zero on failure. */
int av_replace_begin(AvReplace *r, const char *path, char *err);
/* Writes n bytes as the whole temporary (checked: a full disk is an error). */
int av_replace_write(const AvReplace *r, const void *buf, size_t n, char *err);
/* Puts the written temporary into place (rename, or a copy into a special file); the
 * temporary is gone afterwards either way, and r is released. */
int av_replace_commit(AvReplace *r, char *err);
/* Removes the temporary and releases r (a released or zeroed r is fine). */
void av_replace_abort(AvReplace *r);

#endif
