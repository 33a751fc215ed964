/* The model file (io/blob.h): round trip with awkward names, version refusal, bad files. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/blob.h"
#include "src/util.h"

static int fails = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

static char dir[1024];
static const char *pathf(const char *name) {
    static char buf[4][1200];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static const char *W0 = "params/z_encoder.encoder.fc_layers.Layer 0.0.weight";
static const char *B0 = "params/z_encoder.encoder.fc_layers.Layer 0.0.bias";

static void build(AvBlob *b) {
    memset(b, 0, sizeof *b);
    float w[6 * 4], bias[4], scalar = 3.25f;
    for (int i = 0; i < 24; i++) w[i] = (float)i * 0.125f - 1.0f;
    for (int i = 0; i < 4; i++) bias[i] = -(float)i;
    av_blob_add_array(b, W0, 6, 4, w);
    av_blob_add_array(b, B0, 1, 4, bias);
    av_blob_add_array(b, "optimizer/adam m/Layer 0.0.weight", 6, 4, w);
    av_blob_add_array(b, "step", 1, 1, &scalar);
    av_blob_add_array(b, "empty", 0, 7, NULL);
    char *genes[] = {"CD3E", "MS4A1", "caf\xc3\xa9 gene", ""};
    av_blob_add_strings(b, "registry/var_names", 4, genes);
    av_blob_add_strings(b, "registry/batch categories", 0, NULL);
    av_blob_set_attr(b, "model", "SCVI");
    av_blob_set_attr(b, "setup/batch_key", "batch");
    av_blob_set_attr(b, "history", "{\"elbo_train\": [1.0, 0.5]}");
    av_blob_set_attr(b, "model", "SCVI"); /* replaced, not duplicated */
}

static void test_round_trip(void) {
    char err[AV_ERRLEN] = "";
    AvBlob b, c;
    build(&b);
    CHECK(b.n_attrs == 3, "set_attr replaces");
    const char *p = pathf("model.h5");
    CHECK(av_blob_save(p, &b, err) == 0, "%s", err);
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    CHECK(access(tmp, F_OK) != 0, "no temporary file left");
    CHECK(av_blob_load(p, &c, err) == 0, "%s", err);
    CHECK(c.n_arrays == b.n_arrays && c.n_strings == b.n_strings && c.n_attrs == b.n_attrs,
          "counts %d %d %d", c.n_arrays, c.n_strings, c.n_attrs);
    for (int i = 0; i < b.n_arrays; i++) {
        const AvArray *x = &b.arrays[i], *y = av_blob_array(&c, x->name);
        CHECK(y != NULL, "array '%s' read back", x->name);
        if (!y) continue;
        CHECK(y->rows == x->rows && y->cols == x->cols, "shape of %s", x->name);
        CHECK(!memcmp(x->data, y->data, (size_t)(x->rows * x->cols) * sizeof(float)), "values");
    }
    /* creation order kept within a group */
    CHECK(c.n_arrays >= 2 && !strcmp(c.arrays[0].name, W0) && !strcmp(c.arrays[1].name, B0),
          "order: %s", c.n_arrays ? c.arrays[0].name : "");
    const AvStrings *s = av_blob_strings(&c, "registry/var_names");
    CHECK(s && s->n == 4 && !strcmp(s->items[2], "caf\xc3\xa9 gene") && !strcmp(s->items[3], ""),
          "strings");
    s = av_blob_strings(&c, "registry/batch categories");
    CHECK(s && s->n == 0, "empty string list");
    CHECK(av_blob_attr(&c, "model") && !strcmp(av_blob_attr(&c, "model"), "SCVI"), "attr");
    CHECK(av_blob_attr(&c, "setup/batch_key") &&
              !strcmp(av_blob_attr(&c, "setup/batch_key"), "batch"),
          "attr with slash");
    CHECK(av_blob_attr(&c, "atlasvi_blob_version") == NULL, "version is not a user attribute");
    CHECK(av_blob_attr(&c, "nope") == NULL && av_blob_array(&c, "nope") == NULL, "absent");
    av_blob_free(&c);

    /* overwrite: save again with a change; the new content replaces the old atomically */
    float w2[24] = {0};
    av_blob_add_array(&b, W0, 4, 6, w2);
    CHECK(av_blob_save(p, &b, err) == 0, "%s", err);
    CHECK(av_blob_load(p, &c, err) == 0, "%s", err);
    const AvArray *y = av_blob_array(&c, W0);
    CHECK(y && y->rows == 4 && y->cols == 6 && y->data[5] == 0.0f, "replaced array");
    av_blob_free(&c);

    /* invalid names are refused before anything is written */
    AvBlob bad;
    memset(&bad, 0, sizeof bad);
    float one = 1;
    av_blob_add_array(&bad, "a", 1, 1, &one);
    av_blob_add_array(&bad, "a/b", 1, 1, &one);
    CHECK(av_blob_save(pathf("bad.h5"), &bad, err) != 0, "entry and group with one name");
    CHECK(access(pathf("bad.h5"), F_OK) != 0, "nothing written");
    av_blob_free(&bad);
    av_blob_add_array(&bad, "x//y", 1, 1, &one);
    CHECK(av_blob_save(pathf("bad.h5"), &bad, err) != 0 && strstr(err, "x//y"), "%s", err);
    av_blob_free(&bad);
    av_blob_free(&b);
}

static void write_version(const char *p, int with, long long v) {
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (with) {
        hid_t s = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(f, "atlasvi_blob_version", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_LLONG, &v);
        H5Aclose(a);
        H5Sclose(s);
    }
    H5Fclose(f);
}

static void test_refusals(void) {
    char err[AV_ERRLEN] = "";
    AvBlob c;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    write_version(pathf("noversion.h5"), 0, 0);
    CHECK(av_blob_load(pathf("noversion.h5"), &c, err) != 0, "no version refused");
    CHECK(strstr(err, "not an atlasvi model file") != NULL, "message: %s", err);
    write_version(pathf("v2.h5"), 1, 2);
    CHECK(av_blob_load(pathf("v2.h5"), &c, err) != 0, "version 2 refused");
    CHECK(strstr(err, "version 2") != NULL, "message: %s", err);
    CHECK(c.n_arrays == 0 && c.arrays == NULL, "blob left empty");

    FILE *t = fopen(pathf("text.h5"), "w");
    fputs("definitely not HDF5\n", t);
    fclose(t);
    CHECK(av_blob_load(pathf("text.h5"), &c, err) != 0, "text refused");
    CHECK(strstr(err, "not an HDF5") != NULL && !strchr(err, '\n'), "message: %s", err);
    CHECK(av_blob_load(pathf("missing.h5"), &c, err) != 0 && strstr(err, "no such file"), "%s",
          err);

    /* truncated: a real model file cut in half, and cut to 100 bytes */
    AvBlob b;
    memset(&b, 0, sizeof b);
    float *big = calloc(200 * 100, sizeof *big);
    av_blob_add_array(&b, "params/big", 200, 100, big);
    av_blob_add_array(&b, "params/z/last", 3, 3, big);
    av_blob_set_attr(&b, "model", "SCVI");
    free(big);
    const char *p = pathf("trunc.h5");
    CHECK(av_blob_save(p, &b, err) == 0, "%s", err);
    av_blob_free(&b);
    struct stat st;
    stat(p, &st);
    CHECK(truncate(p, st.st_size / 2) == 0, "truncate");
    CHECK(av_blob_load(p, &c, err) != 0, "half file refused");
    CHECK(strlen(err) > 0 && !strchr(err, '\n'), "one line: %s", err);
    printf("truncated (half): %s\n", err);
    CHECK(truncate(p, 100) == 0, "truncate");
    CHECK(av_blob_load(p, &c, err) != 0, "100-byte file refused");
    printf("truncated (100 bytes): %s\n", err);
}

int main(int argc, char **argv) {
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "blob_files");
    mkdir(dir, 0755);
    test_round_trip();
    test_refusals();
    if (fails) {
        fprintf(stderr, "test_blob: %d failure(s)\n", fails);
        return 1;
    }
    printf("test_blob: all checks passed\n");
    return 0;
}
