/* atlasvi hvg: the ranks and files around src/hvg.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "io/input.h"
#include "io/out_var.h"
#include "io/output.h"
#include "io/replace.h"
#include "src/app.h"
#include "src/hvg.h"
#include "src/util.h"

int av_hvg_compute(const char *input, const AvHvgOptions *o, AvHvgResult *r, int64_t *n_vars,
                   char ***var_names, char *err) {
    AvSetup s = {0};
    AvTrainData d = {0};
    memset(r, 0, sizeof *r);
    if (o->layer) s.layer = av_strdup(o->layer);
    if (o->batch_key) s.batch_key = av_strdup(o->batch_key);
    if (av_setup_load(&s, input, NULL, &d, err)) {
        av_setup_free(&s);
        return -1;
    }
    int B = (int)s.n_categories[0];
    int64_t G = s.n_vars;
    int64_t len = av_hvg_stats_len(G, B);
    double *stats = av_calloc((size_t)len + 1, sizeof(double));
    av_hvg_pass1(&d.x, d.cat, d.n_cat, B, stats);
    dist_allreduce_f64(stats, len);
    double *reg_std = av_calloc((size_t)(B * G) + 1, sizeof(double));
    double *clip = av_calloc((size_t)(B * G) + 1, sizeof(double));
    int rc = dist_rank() == 0 ? av_hvg_fit(stats, G, B, o->span, reg_std, clip, err) : 0;
    if (rc && o->batch_key) {
        /* name the batch by its category */
        int b = -1;
        if (sscanf(err, "batch %d", &b) == 1 && b >= 0 && b < B) {
            char tmp[AV_ERRLEN];
            const char *rest = strchr(err, ' ');
            rest = rest ? strchr(rest + 1, ' ') : NULL;
            snprintf(tmp, sizeof tmp, "%s: batch '%s' of '%s'%s", input, s.categories[0][b],
                     o->batch_key, rest ? rest : "");
            memcpy(err, tmp, AV_ERRLEN);
        }
    }
    rc = dist_any_failed(rc, err) ? -1 : 0;
    if (!rc) {
        dist_bcast(reg_std, (int64_t)sizeof(double) * B * G, 0);
        dist_bcast(clip, (int64_t)sizeof(double) * B * G, 0);
        double *clipped = av_calloc((size_t)(2 * B * G) + 1, sizeof(double));
        av_hvg_pass2(&d.x, d.cat, d.n_cat, B, clip, clipped);
        dist_allreduce_f64(clipped, 2 * B * G);
        av_hvg_finish(stats, clipped, reg_std, G, B, o->n_top, r);
        free(clipped);
        if (n_vars) *n_vars = G;
        if (var_names) {
            *var_names = s.var_names;
            s.var_names = NULL;
        }
    }
    free(stats);
    free(reg_std);
    free(clip);
    av_train_data_free(&d);
    av_setup_free(&s);
    return rc;
}

/* The hvg columns for the genes keep[0..m) (all genes when keep is NULL). */
static int add_columns(const char *path, const AvHvgResult *r, const int64_t *keep, int64_t m,
                       int with_nbatches, char *err) {
    double *c[4];
    const double *src[4] = {r->rank, r->means, r->variances, r->variances_norm};
    uint8_t *hv = av_malloc((size_t)m + 1);
    int64_t *nb = av_malloc(sizeof(int64_t) * (size_t)(m + 1));
    for (int k = 0; k < 4; k++) c[k] = av_malloc(sizeof(double) * (size_t)(m + 1));
    for (int64_t t = 0; t < m; t++) {
        int64_t j = keep ? keep[t] : t;
        for (int k = 0; k < 4; k++) c[k][t] = src[k][j];
        hv[t] = r->highly_variable[j];
        nb[t] = r->nbatches[j];
    }
    AvVarColumn cols[6] = {
        {"highly_variable", AV_VARCOL_BOOL, hv}, {"highly_variable_rank", AV_VARCOL_F64, c[0]},
        {"means", AV_VARCOL_F64, c[1]},          {"variances", AV_VARCOL_F64, c[2]},
        {"variances_norm", AV_VARCOL_F64, c[3]}, {"highly_variable_nbatches", AV_VARCOL_I64, nb}};
    int rc = av_h5ad_add_var_columns(path, cols, with_nbatches ? 6 : 5, m, err);
    for (int k = 0; k < 4; k++) free(c[k]);
    free(hv);
    free(nb);
    return rc;
}

/* Puts the finished temporary r into place, or removes it after a failure. */
static int finish_part(int rc, AvReplace *r, char *err) {
    if (rc) {
        av_replace_abort(r);
        return rc;
    }
    return av_replace_commit(r, err);
}

static int write_full(AvInput *in, const char *output, const AvHvgResult *r, int64_t G,
                      int with_nbatches, char *err) {
    AvReplace part;
    if (av_replace_begin(&part, output, err)) return -1;
    AvWriter *w = av_writer_create(part.tmp, in, err);
    int rc = w ? av_writer_commit(w, err) : -1;
    /* the rest of the input (X, layers, obsm, uns, ...) as it is, as scanpy's inplace */
    if (!rc && av_h5ad_copy_missing(part.tmp, in->path, err) < 0) rc = -1;
    if (!rc) rc = add_columns(part.tmp, r, NULL, G, with_nbatches, err);
    return finish_part(rc, &part, err);
}

static int write_subset(AvInput *in, const char *input, const char *subset, const AvHvgResult *r,
                        int64_t G, int with_nbatches, char *err) {
    int64_t m = 0;
    int64_t *keep = av_malloc(sizeof(int64_t) * (size_t)(G + 1));
    int32_t *map = av_malloc(sizeof(int32_t) * (size_t)(G + 1));
    char **names = av_malloc(sizeof(char *) * (size_t)(G + 1));
    for (int64_t j = 0; j < G; j++) {
        map[j] = -1;
        if (r->highly_variable[j]) {
            map[j] = (int32_t)m;
            names[m] = in->var_names[j];
            keep[m++] = j;
        }
    }
    AvReplace part;
    int rc = av_replace_begin(&part, subset, err);
    AvCsrWriter *w = rc ? NULL : av_csr_writer_create(part.tmp, m, names, err);
    if (!w) rc = -1;
    const int64_t chunk = 8192;
    AvCsr rows = {0}, out = {0};
    for (int64_t lo = 0; lo < in->n_obs && !rc; lo += chunk) {
        int64_t hi = lo + chunk < in->n_obs ? lo + chunk : in->n_obs;
        rc = av_input_read_rows(in, lo, hi, &rows, err);
        if (rc) break;
        int64_t nnz = av_csr_nnz(&rows);
        out.n_rows = rows.n_rows;
        out.n_cols = m;
        out.indptr = av_realloc(out.indptr, sizeof(int64_t) * (size_t)(rows.n_rows + 1));
        out.indices = av_realloc(out.indices, sizeof(int32_t) * (size_t)(nnz + 1));
        out.data = av_realloc(out.data, sizeof(float) * (size_t)(nnz + 1));
        int64_t q = 0;
        out.indptr[0] = 0;
        for (int64_t i = 0; i < rows.n_rows; i++) {
            for (int64_t p = rows.indptr[i]; p < rows.indptr[i + 1]; p++) {
                int32_t j = map[rows.indices[p]];
                if (j >= 0) {
                    out.indices[q] = j;
                    out.data[q++] = rows.data[p];
                }
            }
            out.indptr[i + 1] = q;
        }
        rc = av_csr_writer_append(w, &out, err);
        av_csr_free(&rows);
    }
    av_csr_free(&out);
    if (w) {
        if (rc)
            av_csr_writer_abort(w);
        else
            rc = av_csr_writer_finish(w, in->obs_names, NULL, 0, err);
    }
    if (!rc && av_h5ad_copy_obs(part.tmp, input, err) < 0) rc = -1;
    if (!rc) rc = add_columns(part.tmp, r, keep, m, with_nbatches, err);
    rc = finish_part(rc, &part, err);
    free(keep);
    free(map);
    free(names);
    return rc;
}

int av_hvg_write(const char *input, const char *layer, const char *output, const char *subset,
                 const AvHvgResult *r, int64_t n_vars, int with_nbatches, char *err) {
    int rc = 0;
    if (dist_rank() == 0) {
        AvInput in = {0};
        rc = av_input_open(&in, input, layer, err) || av_input_read_names(&in, err);
        if (!rc && in.n_vars != n_vars)
            rc = av_err(err, "%s changed while it was read (%lld genes, expected %lld)", input,
                        (long long)in.n_vars, (long long)n_vars);
        if (!rc && output) rc = write_full(&in, output, r, n_vars, with_nbatches, err);
        if (!rc && subset) rc = write_subset(&in, input, subset, r, n_vars, with_nbatches, err);
        av_input_close(&in);
    }
    return dist_any_failed(rc, err) ? -1 : 0;
}
