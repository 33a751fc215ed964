/* The scVI model file on top of io/blob.h: weights in PyTorch layout under their
 * state-dict names, so that export to scvi-tools is a renaming, not a reshaping. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/blob.h"
#include "src/app.h"
#include "src/util.h"

#define MODEL_FORMAT "atlasvi-scvi-1"

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

int av_model_save(const char *path, const AvScvi *m, const AvSetup *s, const AvOptState *st,
                  const AvHistory *h, char *err) {
    AvBlob b = {0};
    const AvGraph *g = &m->g;
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

static long long get_int(const AvBlob *b, const char *k, long long dflt) {
    const char *v = av_blob_attr(b, k);
    return v ? atoll(v) : dflt;
}
static double get_num(const AvBlob *b, const char *k, double dflt) {
    const char *v = av_blob_attr(b, k);
    return v ? atof(v) : dflt;
}
static char *get_str(const AvBlob *b, const char *k) {
    const char *v = av_blob_attr(b, k);
    return v ? av_strdup(v) : NULL;
}

static int load_tensor(const AvBlob *b, const char *group, const AvTensor *t, float *dst,
                       const char *path, char *err) {
    char name[512];
    snprintf(name, sizeof name, "%s/%s", group, t->name);
    const AvArray *a = av_blob_array(b, name);
    int64_t r = t->transposed ? t->cols : t->rows, c = t->transposed ? t->rows : t->cols;
    if (!a) return av_err(err, "%s: model file lacks '%s'", path, name);
    if (a->rows * a->cols != r * c)
        return av_err(err, "%s: '%s' has %lld x %lld values, expected %lld x %lld", path, name,
                      (long long)a->rows, (long long)a->cols, (long long)r, (long long)c);
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

int av_model_load(const char *path, AvScvi *m, AvSetup *s, AvOptState *st, AvHistory *h,
                  int64_t max_batch, char *err) {
    AvBlob b = {0};
    /* the outputs are freed on failure, whatever the callers passed in (cmd_export's
     * setup was uninitialised: a model file with a bad array freed stack garbage) */
    if (s) memset(s, 0, sizeof *s);
    if (st) memset(st, 0, sizeof *st);
    if (h) memset(h, 0, sizeof *h);
    if (av_blob_load(path, &b, err)) return -1;
    const char *fmt = av_blob_attr(&b, "format");
    if (!fmt || strcmp(fmt, MODEL_FORMAT)) {
        av_err(err, "%s: not an atlasvi scVI model file (format '%s', expected '%s')", path,
               fmt ? fmt : "none", MODEL_FORMAT);
        av_blob_free(&b);
        return -1;
    }
    AvScviConfig c;
    av_scvi_defaults(&c);
    c.n_input = get_int(&b, "n_input", 0);
    c.n_batch = (int)get_int(&b, "n_batch", 1);
    c.n_labels = (int)get_int(&b, "n_labels", 1);
    c.n_hidden = (int)get_int(&b, "n_hidden", 128);
    c.n_latent = (int)get_int(&b, "n_latent", 10);
    c.n_layers = (int)get_int(&b, "n_layers", 1);
    c.dropout_rate = (float)get_num(&b, "dropout_rate", 0.1);
    const char *disp = av_blob_attr(&b, "dispersion"), *lik = av_blob_attr(&b, "gene_likelihood");
    const char *lat = av_blob_attr(&b, "latent_distribution");
    int bad = !disp || !lik || !lat || av_scvi_parse_dispersion(disp, &c.dispersion) ||
              av_scvi_parse_likelihood(lik, &c.likelihood);
    c.latent_ln = lat && !strcmp(lat, "ln");
    c.use_observed_lib_size = (int)get_int(&b, "use_observed_lib_size", 1);
    c.encode_covariates = (int)get_int(&b, "encode_covariates", 0);
    c.deeply_inject_covariates = (int)get_int(&b, "deeply_inject_covariates", 1);
    c.bn_encoder = (int)get_int(&b, "bn_encoder", 1);
    c.bn_decoder = (int)get_int(&b, "bn_decoder", 1);
    c.ln_encoder = (int)get_int(&b, "ln_encoder", 0);
    c.ln_decoder = (int)get_int(&b, "ln_decoder", 0);
    c.log_variational = (int)get_int(&b, "log_variational", 1);
    c.n_cont = (int)get_int(&b, "n_continuous_cov", 0);
    c.n_extra_cat = (int)get_int(&b, "n_extra_categorical_cov", 0);
    char key[64];
    for (int k = 0; k < c.n_extra_cat && k < AV_MAX_CATS; k++) {
        snprintf(key, sizeof key, "n_cats_per_cov_%d", k);
        c.extra_cat_sizes[k] = (int)get_int(&b, key, 0);
    }
    if (bad || c.n_input < 1 || c.n_extra_cat > AV_MAX_CATS - 2 || c.n_cont > AV_MAX_CATS) {
        av_err(err, "%s: the model configuration is incomplete or unsupported", path);
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
    if (!rc && s) {
        memset(s, 0, sizeof *s);
        s->layer = get_str(&b, "layer");
        s->batch_key = get_str(&b, "batch_key");
        s->labels_key = get_str(&b, "labels_key");
        s->n_obs = get_int(&b, "n_obs", 0);
        s->n_extra_cat = c.n_extra_cat;
        s->n_cont = c.n_cont;
        for (int k = 0; k < c.n_extra_cat; k++) {
            snprintf(key, sizeof key, "categorical_covariate_key_%d", k);
            s->cat_keys[k] = get_str(&b, key);
        }
        for (int k = 0; k < c.n_cont; k++) {
            snprintf(key, sizeof key, "continuous_covariate_key_%d", k);
            s->cont_keys[k] = get_str(&b, key);
        }
        for (int k = 0; k < 2 + c.n_extra_cat && !rc; k++) {
            snprintf(key, sizeof key, "registry/categories_%d", k);
            const AvStrings *cs = av_blob_strings(&b, key);
            if (!cs) {
                rc = av_err(err, "%s: model file lacks '%s'", path, key);
                break;
            }
            s->n_categories[k] = cs->n;
            s->categories[k] = av_malloc(sizeof(char *) * (size_t)(cs->n + 1));
            for (int64_t i = 0; i < cs->n; i++) s->categories[k][i] = av_strdup(cs->items[i]);
        }
        const AvStrings *vn = av_blob_strings(&b, "registry/var_names");
        if (!rc && !vn) rc = av_err(err, "%s: model file lacks the gene names", path);
        if (!rc) {
            s->n_vars = vn->n;
            s->var_names = av_malloc(sizeof(char *) * (size_t)(vn->n + 1));
            for (int64_t i = 0; i < vn->n; i++) s->var_names[i] = av_strdup(vn->items[i]);
        }
    }
    if (!rc && st) {
        AvTrainOptions o;
        av_train_defaults(&o);
        av_opt_state_init(st, m, &o);
    }
    if (!rc && st && av_blob_attr(&b, "adam_step")) {
        for (int i = 0; i < g->n_params && !rc; i++) {
            rc = load_tensor(&b, "adam_m", g->params[i], st->m + g->params[i]->offset, path, err);
            if (!rc)
                rc = load_tensor(&b, "adam_v", g->params[i], st->v + g->params[i]->offset, path,
                                 err);
        }
        st->adam.step = get_int(&b, "adam_step", 0);
        st->epochs_done = (int)get_int(&b, "epochs_done", 0);
        st->lr = (float)get_num(&b, "lr", st->lr);
        st->best_val = get_num(&b, "best_validation", INFINITY);
        st->bad_epochs = (int)get_int(&b, "bad_epochs", 0);
        st->bad_epochs_lr = (int)get_int(&b, "bad_epochs_lr", 0);
    }
    if (!rc && h) {
        memset(h, 0, sizeof *h);
        const AvArray *first = av_blob_array(&b, "history/elbo_train");
        int n = first && first->rows > 0 ? (int)first->cols : 0;
        double row[9];
        for (int e = 0; e < n; e++) {
            for (int col = 0; col < 9; col++) {
                snprintf(key, sizeof key, "history/%s", hist_names[col]);
                const AvArray *a = av_blob_array(&b, key);
                /* history arrays are 1 x epochs; a 0 x n array holds no values */
                row[col] = a && a->rows > 0 && a->cols > e ? a->data[e] : NAN;
            }
            av_history_append(h, row);
        }
        h->seconds = get_num(&b, "train_seconds", 0);
    }
    av_blob_free(&b);
    if (rc) {
        av_scvi_free(m);
        if (st) av_opt_state_free(st);
        if (s) av_setup_free(s);
    }
    return rc;
}
