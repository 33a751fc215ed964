/* scvi-tools model files both ways.
 *
 *   test_export_import ATLASVI GOLDEN_DIR DATA.h5ad WORKDIR
 *
 * 1. pickle writer -> reader round trip, and malformed pickles fail cleanly;
 * 2. `atlasvi import` of the committed scvi-tools 1.4.2 model directory, `atlasvi latent`
 *    on the same cells, compared with scvi-tools' get_latent_representation (1e-4);
 * 3. import -> export -> import gives the same weights, buffers, registry and options;
 * 4. refusals: a non-SCVI model, an embedding batch representation, a size factor, a
 *    file that is not a torch archive, export onto an existing model.pt. */
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "io/blob.h"
#include "io/pickle.h"
#include "io/torch_zip.h"
#include "src/util.h"

static int failures = 0;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            failures++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

static const char *bin, *golden, *data, *work;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return av_strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = av_malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = 0;
    fclose(f);
    return s;
}

/* ---- 1. pickle ---- */

static void test_pickle(void) {
    AvPkw w = {0};
    av_pkw_proto2(&w);
    av_pkw_op(&w, '}');
    av_pkw_op(&w, '(');
    int64_t ints[] = {0, 255, 256, 65535, 65536, -1, -70000, 3000000000LL, -5000000000LL};
    for (int k = 0; k < 9; k++) {
        char key[16];
        snprintf(key, sizeof key, "i%d", k);
        av_pkw_str(&w, key);
        av_pkw_int(&w, ints[k]);
    }
    av_pkw_str(&w, "f");
    av_pkw_float(&w, -0.1);
    av_pkw_str(&w, "s");
    av_pkw_str(&w, "Layer 0 \xc3\xa9");
    av_pkw_str(&w, "n");
    av_pkw_none(&w);
    av_pkw_str(&w, "t");
    av_pkw_bool(&w, 1);
    char *names[] = {"a", "\xc3\xa9t\xc3\xa9", ""};
    av_pkw_str(&w, "names");
    av_pkw_ndarray_str(&w, 3, names);
    int64_t codes[] = {0, 200, -3};
    av_pkw_str(&w, "codes");
    av_pkw_ndarray_i64(&w, 3, codes);
    int64_t shape[2] = {2, 3};
    av_pkw_str(&w, "tensor");
    av_pkw_tensor(&w, "FloatStorage", "7", 6, 2, shape);
    av_pkw_op(&w, 'u');
    av_pkw_stop(&w);

    char err[AV_ERRLEN];
    AvPy *root;
    AvPickle *p = av_pickle_load(w.buf, w.len, &root, err);
    CHECK(p && root && root->kind == AV_PY_DICT, "pickle round trip: %s", p ? "" : err);
    if (p) {
        for (int k = 0; k < 9; k++) {
            char key[16];
            snprintf(key, sizeof key, "i%d", k);
            const AvPy *o = av_py_get(root, key);
            CHECK(o && o->kind == AV_PY_INT && o->i == ints[k], "int %lld", (long long)ints[k]);
        }
        const AvPy *o = av_py_get(root, "f");
        CHECK(o && o->kind == AV_PY_FLOAT && o->f == -0.1, "float");
        o = av_py_get(root, "s");
        CHECK(o && o->kind == AV_PY_STR && !strcmp(o->s, "Layer 0 \xc3\xa9"), "str");
        CHECK(av_py_is(av_py_get(root, "n"), AV_PY_NONE), "None");
        o = av_py_get(root, "t");
        CHECK(o && o->kind == AV_PY_BOOL && o->i == 1, "bool");
        char **items;
        int64_t n = av_py_strings(av_py_get(root, "names"), &items);
        CHECK(n == 3 && !strcmp(items[1], names[1]) && !strcmp(items[2], ""), "str array");
        if (n >= 0) av_free_strings(items, n);
        n = av_py_strings(av_py_get(root, "codes"), &items);
        CHECK(n == 3 && !strcmp(items[1], "200") && !strcmp(items[2], "-3"), "i64 array");
        if (n >= 0) av_free_strings(items, n);
        o = av_py_get(root, "tensor");
        CHECK(o && o->kind == AV_PY_TENSOR && o->ndim == 2 && o->shape[1] == 3 &&
                  o->stride[0] == 3 && o->stride[1] == 1 && !strcmp(o->storage->s, "7") &&
                  !strcmp(o->dtype, "f4"),
              "tensor reference");
        av_pickle_free(p);
    }
    /* every truncation of a valid pickle fails with a message, without crashing */
    int ok = 1;
    for (size_t cut = 0; cut + 1 < w.len; cut += 7) {
        AvPickle *q = av_pickle_load(w.buf, cut, &root, err);
        if (q) ok = 0;
        av_pickle_free(q);
    }
    CHECK(ok, "truncated pickles must fail");
    unsigned char bad[] = {0x80, 2,   'c', 'o', 's',  '\n', 's', 'y',
                           's',  't', 'e', 'm', '\n', 'i',  '.'};
    CHECK(!av_pickle_load(bad, sizeof bad, &root, err) && strstr(err, "opcode"),
          "INST opcode refused: %s", err);
    av_pkw_free(&w);
}

/* ---- 2. golden latent ---- */

static float *read_obsm(const char *path, const char *name, hsize_t *dims) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NULL;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    float *v = NULL;
    if (d >= 0) {
        hid_t s = H5Dget_space(d);
        if (H5Sget_simple_extent_ndims(s) == 2) {
            H5Sget_simple_extent_dims(s, dims, NULL);
            v = av_malloc(sizeof(float) * dims[0] * dims[1] + 1);
            if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
                free(v);
                v = NULL;
            }
        }
        H5Sclose(s);
        H5Dclose(d);
    }
    H5Fclose(f);
    return v;
}

static void test_golden_latent(void) {
    CHECK(sh("%s import %s %s/golden.h5 > %s/import.log 2>&1", bin, golden, work, work) == 0,
          "import of the golden scvi-tools directory");
    CHECK(sh("%s latent %s/golden.h5 %s --output %s/latent.h5ad > /dev/null 2>&1", bin, work, data,
             work) == 0,
          "atlasvi latent with the imported model");
    char path[1024];
    snprintf(path, sizeof path, "%s/latent.txt", golden);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    double *ref = av_malloc(sizeof(double) * 100000);
    int64_t n = 0;
    char line[4096];
    while (fgets(line, sizeof line, f) && n < 100000) {
        if (line[0] == '#') continue;
        char *s = line, *e;
        for (double v = strtod(s, &e); e != s && n < 100000; v = strtod(s, &e)) {
            ref[n++] = v;
            s = e;
        }
    }
    fclose(f);
    hsize_t dims[2] = {0, 0};
    snprintf(path, sizeof path, "%s/latent.h5ad", work);
    float *z = read_obsm(path, "/obsm/X_scVI", dims);
    CHECK(z && (int64_t)(dims[0] * dims[1]) == n, "latent shape %llu x %llu vs %lld values",
          (unsigned long long)dims[0], (unsigned long long)dims[1], (long long)n);
    if (z && (int64_t)(dims[0] * dims[1]) == n) {
        double worst = 0;
        for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)z[i] - ref[i]));
        printf("golden latent (%llu cells x %llu): max |atlasvi - scvi-tools| = %.3g\n",
               (unsigned long long)dims[0], (unsigned long long)dims[1], worst);
        CHECK(worst <= 1e-4, "latent differs from scvi-tools by %g", worst);
    }
    free(z);
    free(ref);
}

/* ---- 3. round trip ---- */

static void test_round_trip(void) {
    CHECK(sh("%s export %s/golden.h5 %s/rt > /dev/null 2>&1", bin, work, work) == 0, "export");
    CHECK(sh("%s import %s/rt %s/rt.h5 > /dev/null 2>&1", bin, work, work) == 0, "re-import");
    char a_path[1024], b_path[1024], err[AV_ERRLEN];
    snprintf(a_path, sizeof a_path, "%s/golden.h5", work);
    snprintf(b_path, sizeof b_path, "%s/rt.h5", work);
    AvBlob a = {0}, b = {0};
    int ok = !av_blob_load(a_path, &a, err) && !av_blob_load(b_path, &b, err);
    CHECK(ok, "loading model files: %s", err);
    if (ok) {
        CHECK(a.n_arrays == b.n_arrays && a.n_arrays > 20, "arrays %d vs %d", a.n_arrays,
              b.n_arrays);
        for (int i = 0; i < a.n_arrays; i++) {
            const AvArray *x = &a.arrays[i], *y = av_blob_array(&b, x->name);
            CHECK(y && y->rows == x->rows && y->cols == x->cols &&
                      !memcmp(x->data, y->data, sizeof(float) * (size_t)(x->rows * x->cols)),
                  "weights of '%s' differ after the round trip", x->name);
        }
        CHECK(a.n_strings == b.n_strings, "string lists %d vs %d", a.n_strings, b.n_strings);
        for (int i = 0; i < a.n_strings; i++) {
            const AvStrings *x = &a.strings[i], *y = av_blob_strings(&b, x->name);
            int same = y && y->n == x->n;
            for (int64_t k = 0; same && k < x->n; k++) same = !strcmp(x->items[k], y->items[k]);
            CHECK(same, "registry list '%s' differs after the round trip", x->name);
        }
        CHECK(a.n_attrs == b.n_attrs, "attributes %d vs %d", a.n_attrs, b.n_attrs);
        for (int i = 0; i < a.n_attrs; i++) {
            const char *y = av_blob_attr(&b, a.attrs[i].key);
            CHECK(y && !strcmp(y, a.attrs[i].value), "attribute '%s': '%s' vs '%s'", a.attrs[i].key,
                  a.attrs[i].value, y ? y : "(missing)");
        }
        printf("round trip import -> export -> import: %d arrays, %d name lists, %d attributes "
               "identical\n",
               a.n_arrays, a.n_strings, a.n_attrs);
    }
    av_blob_free(&a);
    av_blob_free(&b);
    /* export refuses to replace model.pt without --overwrite */
    CHECK(sh("%s export %s/golden.h5 %s/rt > %s/out.log 2>&1", bin, work, work, work) != 0,
          "export over an existing model.pt must fail");
    CHECK(sh("%s export %s/golden.h5 %s/rt --overwrite > /dev/null 2>&1", bin, work, work) == 0,
          "export --overwrite");
}

/* ---- 4. refusals ---- */

/* a model.pt with the given registry model name, setup args and init kwargs (kw_key is
 * kw_val, or the integer kw_int where kw_val is NULL) */
static void write_fake(const char *dir, const char *model_name, const char *setup_key,
                       const char *setup_val, const char *kw_key, const char *kw_val,
                       int64_t kw_int) {
    mkdir(dir, 0777);
    AvPkw w = {0};
    av_pkw_proto2(&w);
    av_pkw_op(&w, '}');
    av_pkw_op(&w, '(');
    av_pkw_str(&w, "model_state_dict");
    av_pkw_op(&w, '}');
    char *genes[] = {"g1", "g2"};
    av_pkw_str(&w, "var_names");
    av_pkw_ndarray_str(&w, 2, genes);
    av_pkw_str(&w, "attr_dict");
    av_pkw_op(&w, '}');
    av_pkw_op(&w, '(');
    av_pkw_str(&w, "init_params_");
    av_pkw_op(&w, '}');
    av_pkw_op(&w, '(');
    av_pkw_str(&w, "non_kwargs");
    av_pkw_op(&w, '}');
    av_pkw_str(&w, "kwargs");
    av_pkw_op(&w, '}');
    av_pkw_str(&w, "kwargs");
    av_pkw_op(&w, '}');
    if (kw_key) {
        av_pkw_str(&w, kw_key);
        if (kw_val)
            av_pkw_str(&w, kw_val);
        else
            av_pkw_int(&w, kw_int);
        av_pkw_op(&w, 's');
    }
    av_pkw_op(&w, 's');
    av_pkw_op(&w, 'u');
    av_pkw_str(&w, "registry_");
    av_pkw_op(&w, '}');
    av_pkw_op(&w, '(');
    av_pkw_str(&w, "model_name");
    av_pkw_str(&w, model_name);
    av_pkw_str(&w, "setup_method_name");
    av_pkw_str(&w, "setup_anndata");
    av_pkw_str(&w, "setup_args");
    av_pkw_op(&w, '}');
    if (setup_key) {
        av_pkw_str(&w, setup_key);
        av_pkw_str(&w, setup_val);
        av_pkw_op(&w, 's');
    }
    av_pkw_str(&w, "field_registries");
    av_pkw_op(&w, '}');
    av_pkw_op(&w, '(');
    int64_t zero = 0;
    const char *fields[] = {"batch", "labels"};
    for (int k = 0; k < 2; k++) {
        av_pkw_str(&w, fields[k]);
        av_pkw_op(&w, '}');
        av_pkw_str(&w, "state_registry");
        av_pkw_op(&w, '}');
        av_pkw_str(&w, "categorical_mapping");
        av_pkw_ndarray_i64(&w, 1, &zero);
        av_pkw_op(&w, 's');
        av_pkw_op(&w, 's');
    }
    av_pkw_op(&w, 'u');
    av_pkw_op(&w, 'u');
    av_pkw_op(&w, 'u');
    av_pkw_op(&w, 'u');
    av_pkw_stop(&w);
    char path[1024], err[AV_ERRLEN];
    snprintf(path, sizeof path, "%s/model.pt", dir);
    CHECK(!av_torch_save(path, "model", w.buf, w.len, 0, NULL, err), "fake model: %s", err);
    av_pkw_free(&w);
}

static void expect_refusal(const char *dir, const char *needle) {
    char log[1024];
    snprintf(log, sizeof log, "%s/refusal.log", work);
    int rc = sh("%s import %s %s/refused.h5 > %s 2>&1", bin, dir, work, log);
    char *msg = slurp(log);
    CHECK(rc == 1 && strstr(msg, needle) && strstr(msg, "atlasvi: error:"),
          "import of %s: rc %d, expected a message with '%s', got: %s", dir, rc, needle, msg);
    printf("refused as expected: %s", msg);
    free(msg);
}

static void test_refusals(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/fake_ok", work);
    write_fake(dir, "SCVI", NULL, NULL, NULL, NULL, 0);
    expect_refusal(dir, "lacks 'px_r'"); /* empty state dict: the weights are checked */
    snprintf(dir, sizeof dir, "%s/fake_scanvi", work);
    write_fake(dir, "SCANVI", NULL, NULL, NULL, NULL, 0);
    expect_refusal(dir, "SCANVI model");
    snprintf(dir, sizeof dir, "%s/fake_embedding", work);
    write_fake(dir, "SCVI", NULL, NULL, "batch_representation", "embedding", 0);
    expect_refusal(dir, "batch_representation");
    snprintf(dir, sizeof dir, "%s/fake_sizefactor", work);
    write_fake(dir, "SCVI", "size_factor_key", "sf", NULL, NULL, 0);
    expect_refusal(dir, "size_factor_key");
    snprintf(dir, sizeof dir, "%s/fake_option", work);
    write_fake(dir, "SCVI", NULL, NULL, "gene_likelihood", "normal", 0);
    expect_refusal(dir, "gene_likelihood");
    /* sizes are checked before anything is allocated for them (this one asked for 6 GB) */
    snprintf(dir, sizeof dir, "%s/fake_latent_huge", work);
    write_fake(dir, "SCVI", NULL, NULL, "n_latent", NULL, 1000000);
    expect_refusal(dir, "n_latent is 1000000");
    snprintf(dir, sizeof dir, "%s/not_zip", work);
    mkdir(dir, 0777);
    sh("echo hello > %s/model.pt", dir);
    expect_refusal(dir, "not a zip archive");
    snprintf(dir, sizeof dir, "%s/empty_dir", work);
    mkdir(dir, 0777);
    expect_refusal(dir, "no model.pt");
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s ATLASVI GOLDEN_DIR DATA.h5ad WORKDIR\n", argv[0]);
        return 2;
    }
    bin = argv[1];
    golden = argv[2];
    data = argv[3];
    work = argv[4];
    test_pickle();
    FILE *f = fopen(data, "rb");
    if (!f) {
        printf("skipped: %s not found\n", data);
        return failures ? 1 : 77;
    }
    fclose(f);
    sh("rm -rf %s && mkdir -p %s", work, work);
    test_golden_latent();
    test_round_trip();
    test_refusals();
    if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
