/* atlasvi info FILE [--layer L]: what a file holds, in a few readable lines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/input.h"
#include "src/cli.h"
#include "src/util.h"

#define MAX_SHOWN 8

static void usage(FILE *f) {
    fprintf(f, "usage: atlasvi info FILE [--layer NAME]\n\n"
               "Prints the format, shape, non-zeros, storage, layers, obs columns (categories\n"
               "with counts) and var columns of an .h5ad, 10x .h5, .loom file or a Matrix\n"
               "Market folder. --layer: an h5ad layer, \"raw\" for raw/X, a 10x feature type\n"
               "(or \"all\"), or a loom layer.\n");
}

static void print_categorical(const AvColumn *c, const char *what) {
    int64_t *cnt = av_calloc((size_t)c->n_categories + 1, sizeof *cnt);
    int64_t missing = 0;
    for (int64_t i = 0; i < c->n; i++) {
        if (c->codes[i] < 0)
            missing++;
        else
            cnt[c->codes[i]]++;
    }
    printf("    %-28s %s, %d: ", c->name, what, c->n_categories);
    int shown = c->n_categories < MAX_SHOWN ? c->n_categories : MAX_SHOWN;
    for (int k = 0; k < shown; k++)
        printf("%s%s (%lld)", k ? ", " : "", c->categories[k], (long long)cnt[k]);
    if (c->n_categories > shown) printf(", ... (%d more)", c->n_categories - shown);
    if (missing) printf(", missing (%lld)", (long long)missing);
    printf("\n");
    free(cnt);
}

static void print_numeric(const AvColumn *c) {
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    int64_t nan = 0, integral = 1, seen = 0;
    for (int64_t i = 0; i < c->n; i++) {
        double v = c->values[i];
        if (isnan(v)) {
            nan++;
            continue;
        }
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        sum += v;
        seen = 1;
        if (v != floor(v)) integral = 0;
    }
    int64_t ok = c->n - nan;
    printf("    %-28s numeric%s", c->name, integral && seen ? " (integers)" : "");
    if (ok) printf(", min %.6g, max %.6g, mean %.6g", lo, hi, sum / (double)ok);
    if (nan) printf(", missing (%lld)", (long long)nan);
    printf("\n");
}

static void print_names(const char *label, char **names, int n) {
    printf("%-9s%d", label, n);
    for (int i = 0; i < n && i < 3 * MAX_SHOWN; i++) printf("%s%s", i ? ", " : ": ", names[i]);
    if (n > 3 * MAX_SHOWN) printf(", ... (%d more)", n - 3 * MAX_SHOWN);
    printf("\n");
}

static int info(const char *path, const char *layer, char *err) {
    AvInput in;
    if (av_input_open(&in, path, layer, err)) return -1;
    int rc = 0;
    int64_t *indptr = av_calloc((size_t)(in.n_obs + 1), sizeof *indptr);
    int no_matrix = !strcmp(av_input_storage(&in), "none");
    if (!no_matrix && av_input_read_indptr(&in, indptr, err)) rc = -1;
    if (!rc && av_input_read_names(&in, err)) rc = -1;
    if (!rc) {
        int64_t nnz = indptr[in.n_obs], lo = INT64_MAX, hi = 0;
        for (int64_t r = 0; r < in.n_obs; r++) {
            int64_t k = indptr[r + 1] - indptr[r];
            lo = k < lo ? k : lo;
            hi = k > hi ? k : hi;
        }
        double cells = (double)in.n_obs * (double)in.n_vars;
        printf("file     %s\n", in.path);
        printf("format   %s\n", av_format_name(in.format));
        if (no_matrix) {
            printf("matrix   none (no X): %lld cells x %lld features\n", (long long)in.n_obs,
                   (long long)in.n_vars);
        } else {
            printf("matrix   %s: %lld cells x %lld features, %s %s\n", in.matrix_name,
                   (long long)in.n_obs, (long long)in.n_vars, av_input_storage(&in),
                   av_input_dtype(&in));
            int dense = !strncmp(av_input_storage(&in), "dense", 5);
            printf("nnz      %lld %s (%.2f%% of entries), per cell %lld..%lld\n", (long long)nnz,
                   dense ? "non-zeros" : "stored", cells > 0 ? 100.0 * (double)nnz / cells : 0.0,
                   (long long)(in.n_obs ? lo : 0), (long long)hi);
        }
        char **layers;
        int nl = av_input_layers(&in, &layers);
        const char *lab = in.format == AV_FMT_10X_H5 ? "types" : "layers";
        print_names(lab, layers, nl);
        printf("obs      %lld names", (long long)in.n_obs);
        for (int64_t i = 0; i < in.n_obs && i < 3; i++)
            printf("%s%s", i ? ", " : ": ", in.obs_names[i]);
        printf("%s; %d columns\n", in.n_obs > 3 ? ", ..." : "", in.n_obs_columns);
        for (int k = 0; k < in.n_obs_columns; k++) {
            AvColumn c;
            char cerr[AV_ERRLEN];
            if (av_input_read_obs_column(&in, in.obs_columns[k], &c, cerr)) {
                printf("    %-28s (unreadable: %s)\n", in.obs_columns[k], cerr);
                continue;
            }
            if (c.kind == AV_COL_CATEGORICAL)
                print_categorical(&c, "categorical");
            else if (c.kind == AV_COL_NUMERIC)
                print_numeric(&c);
            else {
                av_column_to_categorical(&c);
                print_categorical(&c, "strings, distinct");
            }
            av_column_free(&c);
        }
        printf("var      %lld names", (long long)in.n_vars);
        for (int64_t i = 0; i < in.n_vars && i < 3; i++)
            printf("%s%s", i ? ", " : ": ", in.var_names[i]);
        printf("%s\n", in.n_vars > 3 ? ", ..." : "");
        char **vc;
        int nv = av_input_var_columns(&in, &vc);
        print_names("var cols", vc, nv);
    }
    free(indptr);
    av_input_close(&in);
    return rc;
}

int av_cmd_info(int argc, char **argv) {
    const char *file = NULL, *layer = NULL;
    char err[AV_ERRLEN] = "";
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        int missing = 0;
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (dist_rank() == 0) usage(stdout);
            return 0;
        } else if ((v = av_opt(argc, argv, &i, "--layer", &missing)) || missing) {
            if (missing) bad = av_err(err, "info: --layer needs a value");
            layer = v;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            bad = av_err(err, "info: unknown option '%s'", argv[i]);
        } else if (!file) {
            file = argv[i];
        } else {
            bad = av_err(err, "info: one file at a time ('%s' is extra)", argv[i]);
        }
    }
    if (!bad && !file)
        bad = av_err(err, "info: no file given (usage: atlasvi info FILE [--layer NAME])");
    int rc = bad ? 1 : 0;
    if (!bad && dist_rank() == 0) rc = info(file, layer, err) ? 1 : 0;
    fflush(stdout);
    dist_bcast(&rc, sizeof rc, 0);
    if (rc && dist_rank() == 0) fprintf(stderr, "atlasvi: error: %s\n", err);
    return rc;
}
