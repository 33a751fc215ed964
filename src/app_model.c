/* The scVI model file on top of io/blob.h: weights in PyTorch layout under their
 * state-dict names, so that export to scvi-tools is a renaming, not a reshaping. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/blob.h"
#include "src/app.h"
#include "src/util.h"

#define MODEL_FORMAT "atlasvi-scvi-1"
/* the command line's --max-epochs limit */
#define AV_MAX_EPOCHS 1000000

static void set_int(AvBlob *b, const char *k, long long v) {
    char s[64];
    snprintf(s, sizeof s, "%lld", v);
    av_blob_set_attr(b, k, s);
}
static void set_num(AvBlob *b, const char *k, double v) {
    char s[64];
    snprintf(s, sizeof s, "%.17g", v);
    av_blob_set_attr(b, k, s);
}

/* torch layout of a tensor: [out, in] for linear weights, as stored otherwise */
static float *to_torch(const AvTensor *t, const float *v) {
    int64_t r = t->rows, c = t->cols;
    float *o = av_malloc(sizeof(float) * (size_t)(r * c));
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) {
            if (t->transposed)
                o[j * r + i] = v[i * c + j];
            else
                o[i * c + j] = v[i * c + j];
        }
    return o;
}

static void add_tensor(AvBlob *b, const char *group, const AvTensor *t, const float *v) {
    char name[512];
    snprintf(name, sizeof name, "%s/%s", group, t->name);
    float *o = to_torch(t, v);
    if (t->transposed)
        av_blob_add_array(b, name, t->cols, t->rows, o);
    else
        av_blob_add_array(b, name, t->rows, t->cols, o);
    free(o);
}

static void save_config(AvBlob *b, const AvScviConfig *c) {
    set_int(b, "n_input", c->n_input);
    set_int(b, "n_batch", c->n_batch);
    set_int(b, "n_labels", c->n_labels);
    set_int(b, "n_hidden", c->n_hidden);
    set_int(b, "n_latent", c->n_latent);
    set_int(b, "n_layers", c->n_layers);
    set_num(b, "dropout_rate", c->dropout_rate);
    av_blob_set_attr(b, "dispersion", av_scvi_dispersion_name(c->dispersion));
    av_blob_set_attr(b, "gene_likelihood", av_scvi_likelihood_name(c->likelihood));
    av_blob_set_attr(b, "latent_distribution", c->latent_ln ? "ln" : "normal");
    set_int(b, "use_observed_lib_size", c->use_observed_lib_size);
    set_int(b, "encode_covariates", c->encode_covariates);
    set_int(b, "deeply_inject_covariates", c->deeply_inject_covariates);
    set_int(b, "bn_encoder", c->bn_encoder);
    set_int(b, "bn_decoder", c->bn_decoder);
    set_int(b, "ln_encoder", c->ln_encoder);
    set_int(b, "ln_decoder", c->ln_decoder);
    set_int(b, "log_variational", c->log_variational);
    set_int(b, "n_continuous_cov", c->n_cont);
    set_int(b, "n_extra_categorical_cov", c->n_extra_cat);
    for (int k = 0; k < c->n_extra_cat; k++) {
        char key[64];
        snprintf(key, sizeof key, "n_cats_per_cov_%d", k);
        set_int(b, key, c->extra_cat_sizes[k]);
    }
}

static const char *hist_names[] = {"elbo_train",
                                   "reconstruction_loss_train",
                                   "kl_local_train",
                                   "train_loss",
                                   "kl_weight",
                                   "elbo_validation",
                                   "reconstruction_loss_validation",
                                   "kl_local_validation",
                                   "validation_loss"};

static double **hist_cols(AvHistory *h, double **cols) {
    double *v[] = {h->elbo_train, h->rec_train, h->kl_train, h->loss_train, h->kl_weight,
                   h->elbo_val,   h->rec_val,   h->kl_val,   h->loss_val};
    memcpy(cols, v, sizeof v);
    return cols;
}

/* The first tensor of ts holding a NaN or an infinity, or NULL. */
static const AvTensor *first_non_finite(AvTensor *const *ts, int n) {
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < ts[i]->rows * ts[i]->cols; k++)
            if (!isfinite(ts[i]->v[k])) return ts[i];
    return NULL;
}

int av_model_save(const char *path, const AvScvi *m, const AvSetup *s, const AvOptState *st,
                  const AvHistory *h, char *err) {
    AvBlob b = {0};
    const AvGraph *g = &m->g;
    const AvTensor *bad = first_non_finite(g->params, g->n_params);
    if (!bad) bad = first_non_finite(g->buffers, g->n_buffers);
    if (bad)
        return av_err(err, "%s: not written: the model's '%s' is not finite (training diverged)",
                      path, bad->name);
    av_blob_set_attr(&b, "format", MODEL_FORMAT);
    av_blob_set_attr(&b, "model", "SCVI");
    save_config(&b, &m->cfg);
    for (int i = 0; i < g->n_params; i++) add_tensor(&b, "params", g->params[i], g->params[i]->v);
    for (int i = 0; i < g->n_buffers; i++)
        add_tensor(&b, "buffers", g->buffers[i], g->buffers[i]->v);
    if (st && st->m) {
        for (int i = 0; i < g->n_params; i++) {
            add_tensor(&b, "adam_m", g->params[i], st->m + g->params[i]->offset);
            add_tensor(&b, "adam_v", g->params[i], st->v + g->params[i]->offset);
        }
        set_int(&b, "adam_step", st->adam.step);
        set_int(&b, "epochs_done", st->epochs_done);
        set_num(&b, "lr", st->lr);
        set_num(&b, "best_validation", st->best_val);
        set_int(&b, "bad_epochs", st->bad_epochs);
        set_int(&b, "bad_epochs_lr", st->bad_epochs_lr);
    }
    /* the registry */
    if (s->layer) av_blob_set_attr(&b, "layer", s->layer);
    if (s->batch_key) av_blob_set_attr(&b, "batch_key", s->batch_key);
    if (s->labels_key) av_blob_set_attr(&b, "labels_key", s->labels_key);
    char key[64];
    for (int k = 0; k < s->n_extra_cat; k++) {
        snprintf(key, sizeof key, "categorical_covariate_key_%d", k);
        av_blob_set_attr(&b, key, s->cat_keys[k]);
    }
    for (int k = 0; k < s->n_cont; k++) {
        snprintf(key, sizeof key, "continuous_covariate_key_%d", k);
        av_blob_set_attr(&b, key, s->cont_keys[k]);
    }
    for (int k = 0; k < 2 + s->n_extra_cat; k++) {
        snprintf(key, sizeof key, "registry/categories_%d", k);
        av_blob_add_strings(&b, key, s->n_categories[k], s->categories[k]);
    }
    av_blob_add_strings(&b, "registry/var_names", s->n_vars, s->var_names);
    set_int(&b, "n_obs", s->n_obs);
    if (h && h->n_epochs) {
        double *cols[9];
        hist_cols((AvHistory *)h, cols);
        float *tmp = av_malloc(sizeof(float) * (size_t)h->n_epochs);
        for (int c = 0; c < 9; c++) {
            for (int e = 0; e < h->n_epochs; e++) tmp[e] = (float)cols[c][e];
            snprintf(key, sizeof key, "history/%s", hist_names[c]);
            av_blob_add_array(&b, key, 1, h->n_epochs, tmp);
        }
        free(tmp);
        set_num(&b, "train_seconds", h->seconds);
    }
    int rc = av_blob_save(path, &b, err);
    av_blob_free(&b);
    return rc;
}

/* Attributes read strictly: a malformed or out-of-range value is the first error of the
 * load (kept in rc), named with the file and the attribute. */
typedef struct {
    const AvBlob *b;
    const char *path;
    char *err;
    int rc;
} Attrs;

static long long attr_int(Attrs *a, const char *k, long long dflt, long long lo, long long hi) {
    const char *v = av_blob_attr(a->b, k);
    if (!v || a->rc) return dflt;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) {
        a->rc = av_err(a->err, "%s: attribute '%s' is '%.40s', not an integer", a->path, k, v);
        return dflt;
    }
    if (x < lo || x > hi) {
        a->rc = av_err(a->err, "%s: attribute '%s' is %lld, expected %lld..%lld", a->path, k, x, lo,
                       hi);
        return dflt;
    }
    return x;
}

static double attr_num(Attrs *a, const char *k, double dflt, double lo, double hi) {
    const char *v = av_blob_attr(a->b, k);
    if (!v || a->rc) return dflt;
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi)) {
        a->rc = av_err(a->err, "%s: attribute '%s' is '%.40s', expected a number in [%g, %g]",
                       a->path, k, v, lo, hi);
        return dflt;
    }
    return x;
}

static int attr_flag(Attrs *a, const char *k, int dflt) {
    return (int)attr_int(a, k, dflt, 0, 1);
}

static char *get_str(const AvBlob *b, const char *k) {
    const char *v = av_blob_attr(b, k);
    return v ? av_strdup(v) : NULL;
}

static int read_config(const AvBlob *b, const char *path, AvScviConfig *c, char *err) {
    Attrs a = {b, path, err, 0};
    av_scvi_defaults(c);
    c->n_input = attr_int(&a, "n_input", 0, 0, INT64_MAX);
    c->n_batch = (int)attr_int(&a, "n_batch", 1, INT_MIN, INT_MAX);
    c->n_labels = (int)attr_int(&a, "n_labels", 1, INT_MIN, INT_MAX);
    c->n_hidden = (int)attr_int(&a, "n_hidden", 128, INT_MIN, INT_MAX);
    c->n_latent = (int)attr_int(&a, "n_latent", 10, INT_MIN, INT_MAX);
    c->n_layers = (int)attr_int(&a, "n_layers", 1, INT_MIN, INT_MAX);
    c->dropout_rate = (float)attr_num(&a, "dropout_rate", 0.1, 0, 0.999);
    c->use_observed_lib_size = attr_flag(&a, "use_observed_lib_size", 1);
    c->encode_covariates = attr_flag(&a, "encode_covariates", 0);
    c->deeply_inject_covariates = attr_flag(&a, "deeply_inject_covariates", 1);
    c->bn_encoder = attr_flag(&a, "bn_encoder", 1);
    c->bn_decoder = attr_flag(&a, "bn_decoder", 1);
    c->ln_encoder = attr_flag(&a, "ln_encoder", 0);
    c->ln_decoder = attr_flag(&a, "ln_decoder", 0);
    c->log_variational = attr_flag(&a, "log_variational", 1);
    c->n_cont = (int)attr_int(&a, "n_continuous_cov", 0, 0, AV_MAX_CATS);
    c->n_extra_cat = (int)attr_int(&a, "n_extra_categorical_cov", 0, 0, AV_MAX_CATS - 2);
    char key[64];
    for (int k = 0; k < c->n_extra_cat; k++) {
        snprintf(key, sizeof key, "n_cats_per_cov_%d", k);
        c->extra_cat_sizes[k] = (int)attr_int(&a, key, 0, INT_MIN, INT_MAX);
    }
    if (a.rc) return -1;
    const char *disp = av_blob_attr(b, "dispersion"), *lik = av_blob_attr(b, "gene_likelihood");
    const char *lat = av_blob_attr(b, "latent_distribution");
    if (!disp || !lik || !lat || av_scvi_parse_dispersion(disp, &c->dispersion) ||
        av_scvi_parse_likelihood(lik, &c->likelihood) ||
        (strcmp(lat, "ln") && strcmp(lat, "normal")))
        return av_err(err, "%s: the model configuration is incomplete or unsupported", path);
    c->latent_ln = !strcmp(lat, "ln");
    char cerr[AV_ERRLEN];
    if (av_scvi_check_config(c, cerr)) return av_err(err, "%s: model attribute %s", path, cerr);
    return 0;
}

/* The registry's category lists and gene names must have the sizes the configuration
 * declares: the codes index the model's batch, label and covariate rows. */
static int check_registry_sizes(const AvBlob *b, const AvScviConfig *c, const char *path,
                                char *err) {
    char key[64];
    for (int k = 0; k < 2 + c->n_extra_cat; k++) {
        snprintf(key, sizeof key, "registry/categories_%d", k);
        const AvStrings *cs = av_blob_strings(b, key);
        long long want = k == 0 ? c->n_batch : k == 1 ? c->n_labels : c->extra_cat_sizes[k - 2];
        const char *what = k == 0 ? "n_batch" : k == 1 ? "n_labels" : "n_cats_per_cov";
        if (!cs) return av_err(err, "%s: model file lacks '%s'", path, key);
        if (cs->n != want)
            return av_err(err, "%s: '%s' has %lld categories but the model declares %s = %lld",
                          path, key, (long long)cs->n, what, want);
    }
    const AvStrings *vn = av_blob_strings(b, "registry/var_names");
    if (!vn) return av_err(err, "%s: model file lacks the gene names", path);
    if (vn->n != c->n_input)
        return av_err(
            err, "%s: 'registry/var_names' has %lld genes but the model declares n_input = %lld",
            path, (long long)vn->n, (long long)c->n_input);
    return 0;
}

/* Every array of a group (params, adam_m, adam_v) has the shape the configuration
 * declares, checked on the declared graph before the model is allocated. */
/* group/t->name in the file, with t's stored shape (rows x cols, transposed as saved);
 * NULL with the error in err otherwise */
static const AvArray *shaped_array(const AvBlob *b, const char *group, const AvTensor *t,
                                   const char *path, char *err) {
    char name[512];
    snprintf(name, sizeof name, "%s/%s", group, t->name);
    const AvArray *a = av_blob_array(b, name);
    int64_t r = t->transposed ? t->cols : t->rows, c = t->transposed ? t->rows : t->cols;
    if (!a) {
        av_err(err, "%s: model file lacks '%s'", path, name);
        return NULL;
    }
    if (a->rows != r || a->cols != c) {
        av_err(err, "%s: '%s' has %lld x %lld values, expected %lld x %lld", path, name,
               (long long)a->rows, (long long)a->cols, (long long)r, (long long)c);
        return NULL;
    }
    return a;
}

static int check_group_shapes(const AvBlob *b, const AvGraph *decl, const char *group,
                              const char *path, char *err) {
    for (int i = 0; i < decl->n_params; i++)
        if (!shaped_array(b, group, decl->params[i], path, err)) return 1;
    return 0;
}

static int check_param_shapes(const AvBlob *b, const AvScviConfig *c, int with_adam,
                              const char *path, char *err) {
    AvGraph decl;
    av_scvi_declare_params(&decl, c);
    int rc = check_group_shapes(b, &decl, "params", path, err);
    if (!rc && with_adam) rc = check_group_shapes(b, &decl, "adam_m", path, err);
    if (!rc && with_adam) rc = check_group_shapes(b, &decl, "adam_v", path, err);
    av_graph_free(&decl);
    return rc;
}

static int load_tensor(const AvBlob *b, const char *group, const AvTensor *t, float *dst,
                       const char *path, char *err) {
    const AvArray *a = shaped_array(b, group, t, path, err);
    if (!a) return 1;
    int64_t r = a->rows, c = a->cols;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) {
            float v = a->data[i * c + j];
            if (t->transposed)
                dst[j * r + i] = v;
            else
                dst[i * c + j] = v;
        }
    return 0;
}

static char **copy_strings(const AvStrings *cs) {
    char **out = av_malloc(sizeof(char *) * (size_t)(cs->n + 1));
    for (int64_t i = 0; i < cs->n; i++) out[i] = av_strdup(cs->items[i]);
    return out;
}

/* The registry (sizes already checked against the configuration). */
static int read_setup(const AvBlob *b, const AvScviConfig *c, AvSetup *s, const char *path,
                      char *err) {
    Attrs a = {b, path, err, 0};
    char key[64];
    memset(s, 0, sizeof *s);
    s->layer = get_str(b, "layer");
    s->batch_key = get_str(b, "batch_key");
    s->labels_key = get_str(b, "labels_key");
    s->n_obs = attr_int(&a, "n_obs", 0, 0, INT64_MAX);
    s->n_extra_cat = c->n_extra_cat;
    s->n_cont = c->n_cont;
    for (int k = 0; k < c->n_extra_cat; k++) {
        snprintf(key, sizeof key, "categorical_covariate_key_%d", k);
        s->cat_keys[k] = get_str(b, key);
    }
    for (int k = 0; k < c->n_cont; k++) {
        snprintf(key, sizeof key, "continuous_covariate_key_%d", k);
        s->cont_keys[k] = get_str(b, key);
    }
    for (int k = 0; k < 2 + c->n_extra_cat; k++) {
        snprintf(key, sizeof key, "registry/categories_%d", k);
        const AvStrings *cs = av_blob_strings(b, key);
        s->n_categories[k] = cs->n;
        s->categories[k] = copy_strings(cs);
    }
    const AvStrings *vn = av_blob_strings(b, "registry/var_names");
    s->n_vars = vn->n;
    s->var_names = copy_strings(vn);
    return a.rc;
}

static int read_opt_counters(const AvBlob *b, AvOptState *st, const char *path, char *err) {
    Attrs a = {b, path, err, 0};
    st->adam.step = attr_int(&a, "adam_step", 0, 0, INT64_MAX / 2);
    st->epochs_done = (int)attr_int(&a, "epochs_done", 0, 0, AV_MAX_EPOCHS);
    st->lr = (float)attr_num(&a, "lr", st->lr, 0, 10);
    st->best_val = attr_num(&a, "best_validation", INFINITY, -HUGE_VAL, HUGE_VAL);
    st->bad_epochs = (int)attr_int(&a, "bad_epochs", 0, 0, AV_MAX_EPOCHS);
    st->bad_epochs_lr = (int)attr_int(&a, "bad_epochs_lr", 0, 0, AV_MAX_EPOCHS);
    return a.rc;
}

static int load_opt_state(const AvBlob *b, const AvScvi *m, AvOptState *st, const char *path,
                          char *err) {
    const AvGraph *g = &m->g;
    AvTrainOptions o;
    av_train_defaults(&o);
    av_opt_state_init(st, m, &o);
    if (!av_blob_attr(b, "adam_step")) return 0;
    int rc = 0;
    for (int i = 0; i < g->n_params && !rc; i++) {
        rc = load_tensor(b, "adam_m", g->params[i], st->m + g->params[i]->offset, path, err);
        if (!rc)
            rc = load_tensor(b, "adam_v", g->params[i], st->v + g->params[i]->offset, path, err);
    }
    return rc ? rc : read_opt_counters(b, st, path, err);
}

/* History columns: 1 x n_epochs arrays, all of the same length (or absent). */
static int load_history(const AvBlob *b, AvHistory *h, const char *path, char *err) {
    memset(h, 0, sizeof *h);
    const AvArray *cols[9];
    char key[64];
    int64_t n = -1;
    for (int col = 0; col < 9; col++) {
        snprintf(key, sizeof key, "history/%s", hist_names[col]);
        cols[col] = av_blob_array(b, key);
        if (!cols[col]) continue;
        if (cols[col]->rows != 1 || cols[col]->cols > AV_MAX_EPOCHS ||
            (n >= 0 && cols[col]->cols != n))
            return av_err(err, "%s: '%s' has shape %lld x %lld, expected 1 x n_epochs", path, key,
                          (long long)cols[col]->rows, (long long)cols[col]->cols);
        n = cols[col]->cols;
    }
    double row[9];
    for (int64_t e = 0; e < n; e++) {
        for (int col = 0; col < 9; col++) row[col] = cols[col] ? cols[col]->data[e] : NAN;
        av_history_append(h, row);
    }
    Attrs a = {b, path, err, 0};
    h->seconds = attr_num(&a, "train_seconds", 0, 0, HUGE_VAL);
    return a.rc;
}

/* Everything checked against the configuration before anything is allocated for it. */
static int validate_model_file(const AvBlob *b, const char *path, AvScviConfig *c, char *err) {
    const char *fmt = av_blob_attr(b, "format");
    if (!fmt || strcmp(fmt, MODEL_FORMAT))
        return av_err(err, "%s: not an atlasvi scVI model file (format '%s', expected '%s')", path,
                      fmt ? fmt : "none", MODEL_FORMAT);
    if (read_config(b, path, c, err) || check_registry_sizes(b, c, path, err)) return -1;
    return check_param_shapes(b, c, av_blob_attr(b, "adam_step") != NULL, path, err);
}

int av_model_load(const char *path, AvScvi *m, AvSetup *s, AvOptState *st, AvHistory *h,
                  int64_t max_batch, char *err) {
    AvBlob b = {0};
    /* the outputs are freed on failure, whatever the callers passed in (cmd_export's
     * setup was uninitialised: a model file with a bad array freed stack garbage) */
    if (s) memset(s, 0, sizeof *s);
    if (st) memset(st, 0, sizeof *st);
    if (h) memset(h, 0, sizeof *h);
    if (av_blob_load(path, &b, err)) return -1;
    AvScviConfig c;
    if (validate_model_file(&b, path, &c, err)) {
        av_blob_free(&b);
        return -1;
    }
    av_scvi_build(m, &c, max_batch, 0);
    AvGraph *g = &m->g;
    int rc = 0;
    for (int i = 0; i < g->n_params && !rc; i++)
        rc = load_tensor(&b, "params", g->params[i], g->params[i]->v, path, err);
    for (int i = 0; i < g->n_buffers && !rc; i++)
        rc = load_tensor(&b, "buffers", g->buffers[i], g->buffers[i]->v, path, err);
    const AvTensor *bad = rc ? NULL : first_non_finite(g->params, g->n_params);
    if (!rc && !bad) bad = first_non_finite(g->buffers, g->n_buffers);
    if (bad)
        rc = av_err(err, "%s: the model's '%s' is not finite (a diverged model)", path, bad->name);
    if (!rc && s) rc = read_setup(&b, &c, s, path, err);
    if (!rc && st) rc = load_opt_state(&b, m, st, path, err);
    if (!rc && h) rc = load_history(&b, h, path, err);
    av_blob_free(&b);
    if (rc) {
        av_scvi_free(m);
        if (st) av_opt_state_free(st);
        if (s) av_setup_free(s);
        if (h) av_history_free(h);
    }
    return rc;
}
