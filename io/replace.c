/* Unique temporaries renamed into place, and in-place writes to special files. */
#include "io/replace.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/util.h"

#define TMP_SUFFIX ".tmpXXXXXX"

/* An existing file that rename() must not replace: a device, FIFO or socket (symbolic
 * links followed, so /dev/stdout counts). */
static int special_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

/* folder + "/" + the base name of path cut so that it and the suffix fit NAME_MAX. */
static char *tmp_template(const char *path, int in_place) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dir = NULL;
    size_t dir_len = 0;
    if (in_place) {
        dir = getenv("TMPDIR");
        if (!dir || !*dir) dir = "/tmp";
        dir_len = strlen(dir);
    } else if (slash) {
        dir = path;
        dir_len = (size_t)(slash - path);
        if (dir_len == 0) dir = "/", dir_len = 1;
    }
    size_t base_len = strlen(base), room = NAME_MAX - strlen(TMP_SUFFIX);
    if (base_len > room) base_len = room;
    size_t n = dir_len + 1 + base_len + strlen(TMP_SUFFIX) + 1;
    char *t = av_malloc(n);
    if (dir)
        snprintf(t, n, "%.*s/%.*s" TMP_SUFFIX, (int)dir_len, dir, (int)base_len, base);
    else
        snprintf(t, n, "%.*s" TMP_SUFFIX, (int)base_len, base);
    return t;
}

int av_replace_begin(AvReplace *r, const char *path, char *err) {
    memset(r, 0, sizeof *r);
    r->in_place = special_file(path);
    char *tmp = tmp_template(path, r->in_place);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        av_err(err, "%s: cannot create a temporary file '%s' (%s)", path, tmp, strerror(e));
        free(tmp);
        return -1;
    }
    close(fd);
    r->path = av_strdup(path);
    r->tmp = tmp;
    return 0;
}

static void release(AvReplace *r) {
    free(r->path);
    free(r->tmp);
    memset(r, 0, sizeof *r);
}

void av_replace_abort(AvReplace *r) {
    if (r->tmp) unlink(r->tmp);
    release(r);
}

/* mkstemp makes the file private (0600); a new output gets the usual 0666 & ~umask. */
static int set_default_mode(const char *tmp) {
    mode_t mask = umask(0);
    umask(mask);
    return chmod(tmp, 0666 & ~mask);
}

static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Copies the temporary's bytes into the special file path. */
static int copy_into(const char *tmp, const char *path, char *err) {
    int in = open(tmp, O_RDONLY), out = in < 0 ? -1 : open(path, O_WRONLY);
    int rc = in < 0 || out < 0 ? -1 : 0;
    char *buf = av_malloc(1 << 16);
    ssize_t n = 0;
    while (!rc && (n = read(in, buf, 1 << 16)) != 0) {
        if (n < 0 && errno == EINTR) continue;
        rc = n < 0 || write_all(out, buf, (size_t)n) ? -1 : 0;
    }
    int e = errno;
    if (out >= 0 && close(out) != 0 && !rc) rc = -1, e = errno;
    if (in >= 0) close(in);
    free(buf);
    if (rc) return av_err(err, "%s: writing failed (%s)", path, strerror(e));
    return 0;
}

int av_replace_write(const AvReplace *r, const void *buf, size_t n, char *err) {
    int fd = open(r->tmp, O_WRONLY | O_TRUNC);
    int rc = fd < 0 || write_all(fd, buf, n) ? -1 : 0;
    int e = errno;
    if (fd >= 0 && close(fd) != 0 && !rc) rc = -1, e = errno;
    if (rc) return av_err(err, "%s: writing '%s' failed (%s)", r->path, r->tmp, strerror(e));
    return 0;
}

int av_replace_commit(AvReplace *r, char *err) {
    int rc = 0;
    if (r->in_place) {
        rc = copy_into(r->tmp, r->path, err);
    } else if (set_default_mode(r->tmp) != 0 || rename(r->tmp, r->path) != 0) {
        int e = errno;
        rc = av_err(err, "%s: cannot move '%s' into place (%s)", r->path, r->tmp, strerror(e));
    }
    if (rc || r->in_place) unlink(r->tmp);
    release(r);
    return rc;
}
