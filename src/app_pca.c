/* atlasvi pca: the ranks, files and ScaLAPACK around src/pca.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "dist/scalapack.h"
#include "io/input.h"
#include "src/app.h"
#include "src/pca.h"
#include "src/util.h"

/* Rank 0 reads the gene mask from file's var column key; sel[j] = position or -1. */
static int read_mask(const char *file, const char *key, char **var_names, int64_t G, int32_t *sel,
                     int64_t *m, char *err) {
    AvInput in = {0};
    AvColumn c = {0};
    int rc = av_input_open(&in, file, NULL, err) || av_input_read_names(&in, err);
    if (!rc && in.n_vars != G)
        rc = av_err(err, "--hvg-from %s has %lld genes, the input %lld", file, (long long)in.n_vars,
                    (long long)G);
    for (int64_t j = 0; j < G && !rc; j++)
        if (strcmp(in.var_names[j], var_names[j]))
            rc = av_err(err, "--hvg-from %s: gene %lld is '%s' but the input has '%s'", file,
                        (long long)j, in.var_names[j], var_names[j]);
    if (!rc) rc = av_input_read_var_column(&in, key, &c, err);
    if (!rc && c.kind != AV_COL_NUMERIC)
        rc = av_err(err, "--hvg-from %s: var column '%s' is not boolean", file, key);
    *m = 0;
    for (int64_t j = 0; j < G && !rc; j++) {
        double v = c.values[j];
        if (v != 0 && v != 1)
            rc = av_err(err, "--hvg-from %s: var column '%s' is not boolean", file, key);
        sel[j] = v == 1 ? (int32_t)(*m)++ : -1;
    }
    if (!rc && *m < 1) rc = av_err(err, "--hvg-from %s: no gene has %s set", file, key);
    av_column_free(&c);
    av_input_close(&in);
    return rc ? -1 : 0;
}

int av_pca_compute(const char *input, const AvPcaOptions *o, AvPcaResult *r, char *err) {
    memset(r, 0, sizeof *r);
    AvSetup s = {0};
    AvTrainData d = {0};
    if (o->layer) s.layer = av_strdup(o->layer);
    if (av_setup_load(&s, input, NULL, &d, err)) {
        av_setup_free(&s);
        return -1;
    }
    int64_t G = s.n_vars, n = d.n_obs, m = G;
    int32_t *sel = NULL;
    int rc = 0;
    if (o->hvg_from) {
        sel = av_malloc(sizeof(int32_t) * (size_t)(G + 1));
        int64_t meta[1] = {0};
        if (dist_rank() == 0)
            rc = read_mask(o->hvg_from, o->mask_key ? o->mask_key : "highly_variable", s.var_names,
                           G, sel, &meta[0], err);
        if (dist_any_failed(rc, err)) {
            rc = -1;
            goto done;
        }
        dist_bcast(meta, sizeof meta, 0);
        dist_bcast(sel, (int64_t)sizeof(int32_t) * G, 0);
        m = meta[0];
    }
    if (m > 46340) {
        rc = av_err(err,
                    "pca of %lld genes: the covariance route takes at most 46340 (select "
                    "genes with --hvg-from)",
                    (long long)m);
        goto done;
    }
    int64_t kmax = m < n - 1 ? m : n - 1;
    if (kmax < 1) {
        rc = av_err(err, "%s: pca needs at least 2 cells and 1 gene", input);
        goto done;
    }
    r->k = o->n_comps < kmax ? o->n_comps : (int)kmax;
    r->n_obs = n;
    r->n_vars = G;
    r->n_used = m;
    av_log_normalize(&d.x, o->target_sum);
    /* one reduction: upper-triangle Gram matrix and column sums */
    double *buf = av_calloc((size_t)(m * m + m) + 1, sizeof(double));
    av_pca_accumulate(&d.x, sel, m, buf, buf + m * m);
    dist_allreduce_f64(buf, m * m + m);
    double *mean = av_malloc(sizeof(double) * (size_t)(m + 1));
    av_pca_covariance(buf, buf + m * m, m, n, mean);
    double total = 0;
    for (int64_t j = 0; j < m; j++) total += buf[j * m + j];
    double *w = av_malloc(sizeof(double) * (size_t)(m + 1));
    double *Z = av_malloc(sizeof(double) * (size_t)(m * m + 1));
    rc = dist_symmetric_eigen(buf, m, w, Z, err);
    free(buf);
    if (!rc) {
        int k = r->k;
        double *load = av_malloc(sizeof(double) * (size_t)(m * k + 1));
        r->variance = av_malloc(sizeof(double) * (size_t)(k + 1));
        r->variance_ratio = av_malloc(sizeof(double) * (size_t)(k + 1));
        av_pca_components(w, Z, m, k, load, r->variance);
        for (int c = 0; c < k; c++) r->variance_ratio[c] = total > 0 ? r->variance[c] / total : 0;
        float *local = av_malloc(sizeof(float) * (size_t)(d.x.n_rows * k + 1));
        av_pca_project(&d.x, sel, m, mean, load, k, local);
        r->scores = av_gather_rows(local, d.x.n_rows, k, n);
        free(local);
        r->loadings = av_calloc((size_t)(G * k) + 1, sizeof(double));
        for (int64_t j = 0; j < G; j++) {
            int64_t t = sel ? sel[j] : j;
            if (t >= 0) memcpy(r->loadings + j * k, load + t * k, sizeof(double) * (size_t)k);
        }
        free(load);
    }
    free(w);
    free(Z);
    free(mean);
done:
    free(sel);
    av_train_data_free(&d);
    av_setup_free(&s);
    if (rc) av_pca_result_free(r);
    return rc ? -1 : 0;
}

void av_pca_result_free(AvPcaResult *r) {
    free(r->scores);
    free(r->loadings);
    free(r->variance);
    free(r->variance_ratio);
    memset(r, 0, sizeof *r);
}
