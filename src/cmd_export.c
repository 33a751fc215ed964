/* atlasvi export MODEL.h5 DIR: a scvi-tools model directory (DIR/model.pt) that
 * scvi.model.SCVI.load(DIR, adata) opens. model.pt is what SCVI.save writes (scvi-tools
 * 1.4.2): {"model_state_dict": OrderedDict of tensors + "pyro_param_store",
 * "var_names": numpy str array, "attr_dict": {init_params_, registry_, is_trained_, ...}}
 * (model-spec.md section 16). Training history and split indices are not exported. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist/dist.h"
#include "io/pickle.h"
#include "io/torch_zip.h"
#include "src/app.h"
#include "src/cli.h"
#include "src/util.h"

#define SCVI_VERSION "1.4.2" /* the scvi-tools version whose model.pt layout is written */

static void usage(FILE *f) {
    fprintf(f,
            "usage: atlasvi export MODEL.h5 DIR [--overwrite]\n\n"
            "Writes DIR/model.pt, a scvi-tools %s model directory that\n"
            "scvi.model.SCVI.load(DIR, adata) opens (weights, BatchNorm statistics, gene\n"
            "names, setup registry with category mappings, constructor arguments).\n"
            "DIR is created if needed; an existing DIR/model.pt is replaced only with\n"
            "--overwrite. Training history and the train/validation split are not exported.\n",
            SCVI_VERSION);
}

/* ---- state dict ---- */

typedef struct {
    AvTorchStorage *st;
    float **owned;
    int n, cap;
} Storages;

static int add_storage(Storages *s, float *data, size_t bytes) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->st = av_realloc(s->st, sizeof *s->st * (size_t)s->cap);
        s->owned = av_realloc(s->owned, sizeof *s->owned * (size_t)s->cap);
    }
    s->st[s->n].data = data;
    s->st[s->n].bytes = bytes;
    s->owned[s->n] = data;
    return s->n++;
}

/* One float tensor under its state-dict name, in torch's shape: linear weights
 * [out, in]; 1-row parameters (biases, BatchNorm, px_r "gene") are 1-D; the library
 * prior buffers stay [1, B]. */
static void put_tensor(AvPkw *w, Storages *s, const AvTensor *t) {
    int64_t r = t->rows, c = t->cols, shape[2];
    float *o = av_malloc(sizeof(float) * (size_t)(r * c) + 1);
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) o[t->transposed ? j * r + i : i * c + j] = t->v[i * c + j];
    int ndim = 2;
    if (t->transposed) {
        shape[0] = c;
        shape[1] = r;
    } else if (r == 1 && strncmp(t->name, "library_log_", 12)) {
        ndim = 1;
        shape[0] = c;
    } else {
        shape[0] = r;
        shape[1] = c;
    }
    char key[32];
    snprintf(key, sizeof key, "%d", add_storage(s, o, sizeof(float) * (size_t)(r * c)));
    av_pkw_str(w, t->name);
    av_pkw_tensor(w, "FloatStorage", key, r * c, ndim, shape);
}

static const AvTensor *find_buffer(const AvGraph *g, const char *name) {
    for (int i = 0; i < g->n_buffers; i++)
        if (!strcmp(g->buffers[i]->name, name)) return g->buffers[i];
    return NULL;
}

/* scvi-tools' order: the root's parameters, its buffers, then each submodule; inside a
 * BatchNorm weight, bias, running_mean, running_var, num_batches_tracked. */
static void write_state_dict(AvPkw *w, Storages *s, const AvScvi *m, int64_t n_batches_tracked) {
    const AvGraph *g = &m->g;
    av_pkw_global(w, "collections", "OrderedDict");
    av_pkw_tuple(w, 0);
    av_pkw_op(w, 'R');
    av_pkw_op(w, '(');
    int i = 0;
    if (i < g->n_params && !strcmp(g->params[i]->name, "px_r")) put_tensor(w, s, g->params[i++]);
    const AvTensor *lm = find_buffer(g, "library_log_means"),
                   *lv = find_buffer(g, "library_log_vars");
    if (lm) put_tensor(w, s, lm);
    if (lv) put_tensor(w, s, lv);
    for (; i < g->n_params; i++) {
        const AvTensor *t = g->params[i];
        put_tensor(w, s, t);
        size_t n = strlen(t->name);
        if (n > 7 && !strcmp(t->name + n - 7, ".1.bias")) {
            char base[512];
            snprintf(base, sizeof base, "%.*s", (int)(n - 4), t->name); /* "...Layer k.1." */
            char name[600];
            snprintf(name, sizeof name, "%srunning_mean", base);
            const AvTensor *rm = find_buffer(g, name);
            snprintf(name, sizeof name, "%srunning_var", base);
            const AvTensor *rv = find_buffer(g, name);
            if (rm) put_tensor(w, s, rm);
            if (rv) put_tensor(w, s, rv);
            /* num_batches_tracked: int64 scalar */
            int64_t *nb = av_malloc(sizeof(int64_t));
            *nb = n_batches_tracked;
            char key[32];
            snprintf(key, sizeof key, "%d", add_storage(s, (float *)nb, sizeof(int64_t)));
            snprintf(name, sizeof name, "%snum_batches_tracked", base);
            av_pkw_str(w, name);
            av_pkw_tensor(w, "LongStorage", key, 1, 0, NULL);
        }
    }
    av_pkw_str(w, "pyro_param_store");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    av_pkw_str(w, "params");
    av_pkw_op(w, '}');
    av_pkw_str(w, "constraints");
    av_pkw_op(w, '}');
    av_pkw_op(w, 'u');
    av_pkw_op(w, 'u');
}

/* ---- registry ---- */

static void key_str(AvPkw *w, const char *k, const char *v) {
    av_pkw_str(w, k);
    if (v)
        av_pkw_str(w, v);
    else
        av_pkw_none(w);
}
static void key_int(AvPkw *w, const char *k, int64_t v) {
    av_pkw_str(w, k);
    av_pkw_int(w, v);
}

static void str_list(AvPkw *w, int n, char *const *items) {
    av_pkw_op(w, ']');
    if (!n) return;
    av_pkw_op(w, '(');
    for (int k = 0; k < n; k++) av_pkw_str(w, items[k]);
    av_pkw_op(w, 'e');
}

/* A categorical mapping: with no key scvi-tools registers the integer constant 0. */
static void mapping(AvPkw *w, const AvSetup *s, int k, int keyed) {
    if (!keyed) {
        int64_t zero = 0;
        av_pkw_ndarray_i64(w, 1, &zero);
    } else {
        av_pkw_ndarray_str(w, s->n_categories[k], s->categories[k]);
    }
}

static void empty_field(AvPkw *w, const char *stat) {
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    av_pkw_str(w, "data_registry");
    av_pkw_op(w, '}');
    av_pkw_str(w, "state_registry");
    av_pkw_op(w, '}');
    av_pkw_str(w, "summary_stats");
    av_pkw_op(w, '}');
    if (stat) {
        av_pkw_op(w, '(');
        key_int(w, stat, 0);
        av_pkw_op(w, 'u');
    }
    av_pkw_op(w, 'u');
}

static void obs_field(AvPkw *w, const AvSetup *s, int k, const char *key, const char *stat) {
    const char *attr_key = k == 0 ? "_scvi_batch" : "_scvi_labels";
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    av_pkw_str(w, "data_registry");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    key_str(w, "attr_name", "obs");
    key_str(w, "attr_key", attr_key);
    av_pkw_op(w, 'u');
    av_pkw_str(w, "state_registry");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    av_pkw_str(w, "categorical_mapping");
    mapping(w, s, k, key != NULL);
    key_str(w, "original_key", key ? key : attr_key);
    av_pkw_op(w, 'u');
    av_pkw_str(w, "summary_stats");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    key_int(w, stat, key ? s->n_categories[k] : 1);
    av_pkw_op(w, 'u');
    av_pkw_op(w, 'u');
}

static void write_registry(AvPkw *w, const AvSetup *s, int64_t n_obs) {
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    key_str(w, "scvi_version", SCVI_VERSION);
    key_str(w, "model_name", "SCVI");
    key_str(w, "setup_method_name", "setup_anndata");
    av_pkw_str(w, "setup_args");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    key_str(w, "layer", s->layer);
    key_str(w, "batch_key", s->batch_key);
    key_str(w, "labels_key", s->labels_key);
    key_str(w, "size_factor_key", NULL);
    av_pkw_str(w, "categorical_covariate_keys");
    if (s->n_extra_cat)
        str_list(w, s->n_extra_cat, s->cat_keys);
    else
        av_pkw_none(w);
    av_pkw_str(w, "continuous_covariate_keys");
    if (s->n_cont)
        str_list(w, s->n_cont, s->cont_keys);
    else
        av_pkw_none(w);
    av_pkw_op(w, 'u');

    av_pkw_str(w, "field_registries");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    /* X */
    av_pkw_str(w, "X");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    av_pkw_str(w, "data_registry");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    key_str(w, "attr_name", s->layer ? "layers" : "X");
    key_str(w, "attr_key", s->layer);
    av_pkw_op(w, 'u');
    av_pkw_str(w, "state_registry");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    key_int(w, "n_obs", n_obs);
    key_int(w, "n_vars", s->n_vars);
    av_pkw_str(w, "column_names");
    av_pkw_ndarray_str(w, s->n_vars, s->var_names);
    av_pkw_op(w, 'u');
    av_pkw_str(w, "summary_stats");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    key_int(w, "n_vars", s->n_vars);
    key_int(w, "n_cells", n_obs);
    av_pkw_op(w, 'u');
    av_pkw_op(w, 'u');
    /* batch, labels, size factor */
    av_pkw_str(w, "batch");
    obs_field(w, s, 0, s->batch_key, "n_batch");
    av_pkw_str(w, "labels");
    obs_field(w, s, 1, s->labels_key, "n_labels");
    av_pkw_str(w, "size_factor");
    empty_field(w, NULL);
    /* extra categorical covariates */
    av_pkw_str(w, "extra_categorical_covs");
    if (!s->n_extra_cat) {
        empty_field(w, "n_extra_categorical_covs");
    } else {
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        av_pkw_str(w, "data_registry");
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        key_str(w, "attr_name", "obsm");
        key_str(w, "attr_key", "_scvi_extra_categorical_covs");
        av_pkw_op(w, 'u');
        av_pkw_str(w, "state_registry");
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        av_pkw_str(w, "mappings");
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        for (int k = 0; k < s->n_extra_cat; k++) {
            av_pkw_str(w, s->cat_keys[k]);
            mapping(w, s, 2 + k, 1);
        }
        av_pkw_op(w, 'u');
        av_pkw_str(w, "field_keys");
        str_list(w, s->n_extra_cat, s->cat_keys);
        av_pkw_str(w, "n_cats_per_key");
        av_pkw_op(w, ']');
        av_pkw_op(w, '(');
        for (int k = 0; k < s->n_extra_cat; k++) av_pkw_int(w, s->n_categories[2 + k]);
        av_pkw_op(w, 'e');
        av_pkw_op(w, 'u');
        av_pkw_str(w, "summary_stats");
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        key_int(w, "n_extra_categorical_covs", s->n_extra_cat);
        av_pkw_op(w, 'u');
        av_pkw_op(w, 'u');
    }
    /* extra continuous covariates */
    av_pkw_str(w, "extra_continuous_covs");
    if (!s->n_cont) {
        empty_field(w, "n_extra_continuous_covs");
    } else {
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        av_pkw_str(w, "data_registry");
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        key_str(w, "attr_name", "obsm");
        key_str(w, "attr_key", "_scvi_extra_continuous_covs");
        av_pkw_op(w, 'u');
        av_pkw_str(w, "state_registry");
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        av_pkw_str(w, "columns");
        av_pkw_ndarray_str(w, s->n_cont, s->cont_keys);
        av_pkw_op(w, 'u');
        av_pkw_str(w, "summary_stats");
        av_pkw_op(w, '}');
        av_pkw_op(w, '(');
        key_int(w, "n_extra_continuous_covs", s->n_cont);
        av_pkw_op(w, 'u');
        av_pkw_op(w, 'u');
    }
    av_pkw_op(w, 'u'); /* field_registries */
    av_pkw_op(w, 'u'); /* registry */
}

/* the shortest decimal that reads back as f, as a double (0.1f -> 0.1, not 0.10000000149) */
static double short_double(float f) {
    char buf[32];
    for (int prec = 1; prec < 10; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static void write_init_params(AvPkw *w, const AvScviConfig *c) {
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    av_pkw_str(w, "kwargs");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    av_pkw_str(w, "kwargs");
    av_pkw_op(w, '}');
    av_pkw_op(w, '('); /* the module options, all explicit so no default decides them */
    av_pkw_str(w, "encode_covariates");
    av_pkw_bool(w, c->encode_covariates);
    av_pkw_str(w, "deeply_inject_covariates");
    av_pkw_bool(w, c->deeply_inject_covariates);
    key_str(w, "use_batch_norm", av_scvi_norm_name(c->bn_encoder, c->bn_decoder));
    key_str(w, "use_layer_norm", av_scvi_norm_name(c->ln_encoder, c->ln_decoder));
    av_pkw_str(w, "log_variational");
    av_pkw_bool(w, c->log_variational);
    av_pkw_op(w, 'u');
    av_pkw_op(w, 'u');
    av_pkw_str(w, "non_kwargs");
    av_pkw_op(w, '}');
    av_pkw_op(w, '(');
    key_int(w, "n_hidden", c->n_hidden);
    key_int(w, "n_latent", c->n_latent);
    key_int(w, "n_layers", c->n_layers);
    av_pkw_str(w, "dropout_rate");
    av_pkw_float(w, short_double(c->dropout_rate));
    key_str(w, "dispersion", av_scvi_dispersion_name(c->dispersion));
    key_str(w, "gene_likelihood", av_scvi_likelihood_name(c->likelihood));
    av_pkw_str(w, "use_observed_lib_size");
    av_pkw_bool(w, c->use_observed_lib_size);
    key_str(w, "latent_distribution", c->latent_ln ? "ln" : "normal");
    av_pkw_op(w, 'u');
    av_pkw_op(w, 'u');
}

static int export_model(const char *model, const char *dir, int overwrite, char *err) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return av_err(err, "'%s' exists and is not a folder", dir);
    } else if (mkdir(dir, 0777) && errno != EEXIST) {
        return av_err(err, "cannot create the folder '%s'", dir);
    }
    size_t n = strlen(dir) + 16;
    char *path = av_malloc(n);
    snprintf(path, n, "%s/model.pt", dir);
    if (!overwrite && access(path, F_OK) == 0) {
        av_err(err, "'%s' exists; pass --overwrite to replace it", path);
        free(path);
        return -1;
    }
    AvScvi m;
    AvSetup s;
    AvOptState st;
    if (av_model_load(model, &m, &s, &st, NULL, 1, err)) {
        free(path);
        return -1;
    }
    AvPkw w = {0};
    Storages stor = {0};
    av_pkw_proto2(&w);
    av_pkw_op(&w, '}');
    av_pkw_op(&w, '(');
    av_pkw_str(&w, "model_state_dict");
    write_state_dict(&w, &stor, &m, st.adam.step);
    av_pkw_str(&w, "var_names");
    av_pkw_ndarray_str(&w, s.n_vars, s.var_names);
    av_pkw_str(&w, "attr_dict");
    av_pkw_op(&w, '}');
    av_pkw_op(&w, '(');
    key_str(&w, "get_normalized_function_name_", "get_normalized_expression");
    av_pkw_str(&w, "init_params_");
    write_init_params(&w, &m.cfg);
    av_pkw_str(&w, "is_trained_");
    av_pkw_bool(&w, 1);
    av_pkw_str(&w, "registry_");
    write_registry(&w, &s, s.n_obs);
    av_pkw_op(&w, 'u');
    av_pkw_op(&w, 'u');
    av_pkw_stop(&w);
    int rc = av_torch_save(path, "model", w.buf, w.len, stor.n, stor.st, err);
    long long genes = (long long)m.cfg.n_input;
    int latent = m.cfg.n_latent;
    for (int i = 0; i < stor.n; i++) free(stor.owned[i]);
    free(stor.owned);
    free(stor.st);
    av_pkw_free(&w);
    av_opt_state_free(&st);
    av_setup_free(&s);
    av_scvi_free(&m);
    if (!rc)
        printf("atlasvi: wrote %s (scvi-tools %s SCVI, %lld genes, %d latent)\n", path,
               SCVI_VERSION, genes, latent);
    free(path);
    return rc;
}

int av_cmd_export(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL};
    int npos = 0, overwrite = 0, bad = 0;
    char err[AV_ERRLEN] = "";
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (dist_rank() == 0) usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--overwrite")) {
            overwrite = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            bad = av_err(err, "unknown option '%s'", argv[i]);
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            bad = av_err(err, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!bad && npos < 2) bad = av_err(err, "export needs MODEL.h5 and DIR");
    if (bad) {
        if (dist_rank() == 0) {
            fprintf(stderr, "atlasvi: error: %s\n", err);
            usage(stderr);
        }
        return 2;
    }
    int rc = dist_rank() == 0 ? export_model(pos[0], pos[1], overwrite, err) : 0;
    return dist_any_failed(rc != 0, err) ? 1 : 0;
}
