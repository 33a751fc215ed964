/* setup_anndata for scVI over ranks: registry on rank 0, broadcast, then each rank
 * reads its own block of cells. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/input.h"
#include "src/app.h"
#include "src/util.h"

AvComm av_comm_world(void) {
    AvComm c = {dist_rank(), dist_size(), dist_allreduce_f32, dist_allreduce_f64};
    return c;
}

void av_setup_free(AvSetup *s) {
    free(s->layer);
    free(s->batch_key);
    free(s->labels_key);
    for (int k = 0; k < s->n_extra_cat; k++) free(s->cat_keys[k]);
    for (int k = 0; k < s->n_cont; k++) free(s->cont_keys[k]);
    for (int k = 0; k < 2 + AV_MAX_CATS; k++) av_free_strings(s->categories[k], s->n_categories[k]);
    av_free_strings(s->var_names, s->n_vars);
    memset(s, 0, sizeof *s);
}

static char *dup_or_null(const char *s) {
    return s ? av_strdup(s) : NULL;
}

void av_setup_copy_keys(AvSetup *dst, const AvSetup *src) {
    memset(dst, 0, sizeof *dst);
    dst->layer = dup_or_null(src->layer);
    dst->batch_key = dup_or_null(src->batch_key);
    dst->labels_key = dup_or_null(src->labels_key);
    dst->n_extra_cat = src->n_extra_cat;
    dst->n_cont = src->n_cont;
    for (int k = 0; k < src->n_extra_cat; k++) dst->cat_keys[k] = dup_or_null(src->cat_keys[k]);
    for (int k = 0; k < src->n_cont; k++) dst->cont_keys[k] = dup_or_null(src->cont_keys[k]);
}

void av_train_data_free(AvTrainData *d) {
    av_csr_free(&d->x);
    free(d->cat);
    free(d->cont);
    memset(d, 0, sizeof *d);
}

/* Reads a categorical key as codes into the registered categories. With no key every
 * cell gets code 0 and the mapping is ["0"], as scvi-tools registers a constant. */
static int register_codes(AvInput *in, const char *key, int64_t *n_cat, char ***cats,
                          const AvSetup *ref, int slot, int32_t *codes, char *err) {
    if (!key) {
        memset(codes, 0, sizeof(int32_t) * (size_t)in->n_obs);
        if (!*cats) {
            *cats = av_malloc(sizeof(char *));
            (*cats)[0] = av_strdup("0");
            *n_cat = 1;
        }
        return 0;
    }
    AvColumn c = {0};
    if (av_input_read_obs_column(in, key, &c, err)) return -1;
    av_column_to_categorical(&c);
    int rc = 0;
    if (ref) {
        *n_cat = ref->n_categories[slot];
        *cats = av_malloc(sizeof(char *) * (size_t)(*n_cat + 1));
        for (int64_t r = 0; r < *n_cat; r++) (*cats)[r] = av_strdup(ref->categories[slot][r]);
        /* map this file's categories onto the reference's by name */
        int32_t *map = av_malloc(sizeof(int32_t) * (size_t)(c.n_categories + 1));
        for (int32_t k = 0; k < c.n_categories; k++) {
            map[k] = -1;
            for (int64_t r = 0; r < ref->n_categories[slot]; r++)
                if (!strcmp(c.categories[k], ref->categories[slot][r])) map[k] = (int32_t)r;
        }
        for (int64_t i = 0; i < c.n && !rc; i++) {
            int32_t code = c.codes[i];
            if (code >= 0 && map[code] < 0)
                rc = av_err(
                    err, "%s: obs key '%s' has category '%s' that the model was not trained with",
                    in->path, key, c.categories[code]);
            codes[i] = code < 0 ? -1 : map[code];
        }
        free(map);
    } else {
        memcpy(codes, c.codes, sizeof(int32_t) * (size_t)c.n);
        *n_cat = c.n_categories;
        *cats = c.categories;
        c.categories = NULL;
        c.n_categories = 0;
    }
    for (int64_t i = 0; i < c.n && !rc; i++)
        if (codes[i] < 0)
            rc = av_err(err,
                        "%s: obs key '%s' is missing (NaN) for cell %lld ('%s'); scVI needs a "
                        "category for every cell",
                        in->path, key, (long long)i, in->obs_names ? in->obs_names[i] : "?");
    av_column_free(&c);
    return rc;
}

static int read_cont(AvInput *in, const char *key, float *out, int64_t stride, char *err) {
    AvColumn c = {0};
    if (av_input_read_obs_column(in, key, &c, err)) return -1;
    int rc = 0;
    if (c.kind != AV_COL_NUMERIC)
        rc = av_err(err, "%s: continuous covariate '%s' is not numeric", in->path, key);
    for (int64_t i = 0; i < c.n && !rc; i++) {
        if (!isfinite(c.values[i]))
            rc = av_err(err, "%s: continuous covariate '%s' is not finite for cell %lld", in->path,
                        key, (long long)i);
        out[i * stride] = (float)c.values[i];
    }
    av_column_free(&c);
    return rc;
}

/* Negative, NaN/Inf and empty cells are errors; non-integers are counted for a warning. */
int av_check_counts(const AvCsr *x, int64_t row0, const char *path, int64_t *non_integer,
                    char *err) {
    for (int64_t i = 0; i < x->n_rows; i++) {
        double tot = 0;
        for (int64_t k = x->indptr[i]; k < x->indptr[i + 1]; k++) {
            float v = x->data[k];
            if (!isfinite(v))
                return av_err(err, "%s: the count matrix holds %s at cell %lld, gene %d", path,
                              isnan(v) ? "NaN" : "Inf", (long long)(row0 + i), x->indices[k]);
            if (v < 0)
                return av_err(err,
                              "%s: negative count %g at cell %lld, gene %d; scVI needs raw counts",
                              path, v, (long long)(row0 + i), x->indices[k]);
            if (v != floorf(v)) (*non_integer)++;
            tot += v;
        }
        if (tot <= 0)
            return av_err(err,
                          "%s: cell %lld has zero total counts; remove empty cells first "
                          "(e.g. scanpy.pp.filter_cells(adata, min_counts=1))",
                          path, (long long)(row0 + i));
    }
    return 0;
}

static int setup_load(AvSetup *s, const char *path, const AvSetup *ref, AvTrainData *d,
                      int read_counts, char *err);

/* A file without feature types trains every feature as a gene: say so when some look
 * like antibody tags (CITE-seq ADTs). */
static void warn_untyped_antibodies(const AvInput *in) {
    const char *example = NULL;
    int64_t n = av_input_untyped_antibodies(in, &example);
    if (n > 0)
        fprintf(stderr,
                "atlasvi: warning: %s has no feature types and %lld of its %lld features look "
                "like antibody tags (e.g. '%s'); they are trained as genes: remove them, or give "
                "a file with feature_type\n",
                in->path, (long long)n, (long long)in->n_vars, example);
}

int av_setup_load(AvSetup *s, const char *path, const AvSetup *ref, AvTrainData *d, char *err) {
    return setup_load(s, path, ref, d, 1, err);
}

int av_setup_load_meta(AvSetup *s, const char *path, const AvSetup *ref, AvTrainData *d,
                       char *err) {
    return setup_load(s, path, ref, d, 0, err);
}

static int setup_load(AvSetup *s, const char *path, const AvSetup *ref, AvTrainData *d,
                      int read_counts, char *err) {
    int rank = dist_rank(), P = dist_size();
    AvInput in = {0};
    memset(d, 0, sizeof *d);
    d->n_cat = 2 + s->n_extra_cat;
    d->n_cont = s->n_cont;
    /* Phase 1: rank 0 registers the file. */
    int32_t *codes = NULL;
    float *cont = NULL;
    int64_t *indptr = NULL, meta[2] = {0, 0};
    int rc = 0;
    if (rank == 0) {
        rc = av_input_open(&in, path, s->layer, err) || av_input_read_names(&in, err);
        if (!rc) warn_untyped_antibodies(&in);
        if (!rc) {
            meta[0] = in.n_obs;
            meta[1] = in.n_vars;
            codes = av_malloc(sizeof(int32_t) * (size_t)(in.n_obs * d->n_cat + 1));
            cont = av_malloc(sizeof(float) * (size_t)(in.n_obs * d->n_cont + 1));
            int32_t *tmp = av_malloc(sizeof(int32_t) * (size_t)(in.n_obs + 1));
            const char *keys[2 + AV_MAX_CATS] = {s->batch_key, s->labels_key};
            for (int k = 0; k < s->n_extra_cat; k++) keys[2 + k] = s->cat_keys[k];
            for (int k = 0; k < d->n_cat && !rc; k++) {
                rc = register_codes(&in, keys[k], &s->n_categories[k], &s->categories[k], ref, k,
                                    tmp, err);
                for (int64_t i = 0; i < in.n_obs && !rc; i++) codes[i * d->n_cat + k] = tmp[i];
            }
            free(tmp);
            for (int k = 0; k < d->n_cont && !rc; k++)
                rc = read_cont(&in, s->cont_keys[k], cont + k, d->n_cont, err);
            if (!rc && ref) {
                if (ref->n_vars != in.n_vars)
                    rc = av_err(err, "%s has %lld genes but the model was trained on %lld", path,
                                (long long)in.n_vars, (long long)ref->n_vars);
                for (int64_t j = 0; j < in.n_vars && !rc; j++)
                    if (strcmp(ref->var_names[j], in.var_names[j]))
                        rc = av_err(err,
                                    "%s: gene %lld is '%s' but the model has '%s' there; subset "
                                    "and order the genes as in training",
                                    path, (long long)j, in.var_names[j], ref->var_names[j]);
            }
            if (!rc && in.n_obs < 1) rc = av_err(err, "%s holds no cells", path);
            if (!rc) {
                indptr = av_malloc(sizeof(int64_t) * (size_t)(in.n_obs + 1));
                rc = av_input_read_indptr(&in, indptr, err);
            }
            if (!rc) {
                s->n_vars = in.n_vars;
                s->var_names = in.var_names;
                in.var_names = NULL;
            }
        }
    }
    if (dist_any_failed(rc, err)) goto fail;
    /* Phase 2: broadcast the registry and the shard plan. */
    dist_bcast(meta, sizeof meta, 0);
    d->n_obs = meta[0];
    s->n_obs = meta[0];
    if (rank != 0) {
        codes = av_malloc(sizeof(int32_t) * (size_t)(d->n_obs * d->n_cat + 1));
        cont = av_malloc(sizeof(float) * (size_t)(d->n_obs * d->n_cont + 1));
    }
    dist_bcast(codes, (int64_t)sizeof(int32_t) * d->n_obs * d->n_cat, 0);
    dist_bcast(cont, (int64_t)sizeof(float) * d->n_obs * d->n_cont, 0);
    for (int k = 0; k < d->n_cat; k++)
        dist_bcast_strings(&s->categories[k], &s->n_categories[k], 0);
    s->n_vars = meta[1];
    dist_bcast_strings(&s->var_names, &s->n_vars, 0);
    int64_t *bounds = av_malloc(sizeof(int64_t) * (size_t)(P + 1));
    if (rank == 0) dist_plan_shards(indptr, d->n_obs, P, bounds);
    free(indptr);
    indptr = NULL;
    dist_bcast(bounds, (int64_t)sizeof(int64_t) * (P + 1), 0);
    int64_t lo = bounds[rank], hi = bounds[rank + 1];
    free(bounds);
    /* Phase 3: every rank reads its own cells (unless they are to be streamed). */
    rc = 0;
    int64_t non_integer = 0;
    if (read_counts) {
        if (rank != 0) rc = av_input_open(&in, path, s->layer, err);
        if (!rc) rc = av_input_read_rows(&in, lo, hi, &d->x, err);
        if (!rc) rc = av_check_counts(&d->x, lo, path, &non_integer, err);
    } else {
        d->x.n_rows = hi - lo;
    }
    if (dist_any_failed(rc, err)) goto fail;
    dist_allreduce_i64(&non_integer, 1);
    if (non_integer && rank == 0)
        fprintf(stderr,
                "atlasvi: warning: %s: %lld values are not integers; scVI expects raw counts (as "
                "scvi-tools, training goes on)\n",
                path, (long long)non_integer);
    d->row0 = lo;
    d->x.n_cols = meta[1];
    d->cat = av_malloc(sizeof(int32_t) * (size_t)((hi - lo) * d->n_cat + 1));
    memcpy(d->cat, codes + lo * d->n_cat, sizeof(int32_t) * (size_t)((hi - lo) * d->n_cat));
    d->cont = av_malloc(sizeof(float) * (size_t)((hi - lo) * d->n_cont + 1));
    memcpy(d->cont, cont + lo * d->n_cont, sizeof(float) * (size_t)((hi - lo) * d->n_cont));
    free(codes);
    free(cont);
    av_input_close(&in);
    return 0;
fail:
    free(codes);
    free(cont);
    free(indptr);
    av_input_close(&in);
    av_train_data_free(d);
    return -1;
}
