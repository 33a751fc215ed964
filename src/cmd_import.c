/* atlasvi import DIR MODEL.h5: reads a scvi-tools SCVI model directory (DIR/model.pt, as
 * SCVI.save writes it) without Python and writes an atlasvi model file. The options come
 * from init_params_ (module defaults of scvi-tools 1.x where absent), the registry gives
 * the gene names, keys and category mappings, and every state-dict tensor must match the
 * shape atlasvi builds for those options (model-spec.md section 16). */
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

static void usage(FILE *f) {
    fprintf(f, "usage: atlasvi import DIR MODEL.h5\n\n"
               "Reads a scvi-tools SCVI model directory (DIR/model.pt as written by\n"
               "SCVI.save; DIR may also be the model.pt file itself) and writes an atlasvi\n"
               "model file for atlasvi latent / normalize / train --resume. Supported: SCVI\n"
               "set up with setup_anndata (batch, labels, layer, categorical and continuous\n"
               "covariates), one-hot batch representation, no size factor, gene likelihood\n"
               "zinb/nb/poisson, any dispersion, normal or ln latent, BatchNorm/LayerNorm\n"
               "placements. Other models and options are refused with a message.\n");
}

/* ---- reading values out of the unpickled tree ---- */

static const char *py_str(const AvPy *o) {
    return o && o->kind == AV_PY_STR ? o->s : NULL;
}

/* str or None into *out (NULL for None); -1 for anything else */
static int opt_str(const AvPy *o, const char **out) {
    *out = NULL;
    if (!o || o->kind == AV_PY_NONE) return 0;
    if (o->kind != AV_PY_STR) return -1;
    *out = o->s;
    return 0;
}

static int py_bool(const AvPy *o, int *out) {
    if (o && (o->kind == AV_PY_BOOL || o->kind == AV_PY_INT)) {
        *out = o->i != 0;
        return 0;
    }
    return -1;
}

static int py_int(const AvPy *o, int64_t *out) {
    if (o && o->kind == AV_PY_INT) {
        *out = o->i;
        return 0;
    }
    return -1;
}

static int py_num(const AvPy *o, double *out) {
    if (o && o->kind == AV_PY_FLOAT) {
        *out = o->f;
        return 0;
    }
    if (o && o->kind == AV_PY_INT) {
        *out = (double)o->i;
        return 0;
    }
    return -1;
}

/* Flattened constructor arguments: non_kwargs then the dicts inside kwargs (as
 * scvi-tools' _initialize_model does). */
typedef struct {
    int n;
    const char *key[64];
    const AvPy *val[64];
} Params;

static void params_add(Params *p, const AvPy *dict) {
    for (int64_t i = 0; dict && dict->kind == AV_PY_DICT && i < dict->n / 2 && p->n < 64; i++) {
        const AvPy *k = dict->items[2 * i];
        if (k->kind != AV_PY_STR) continue;
        p->key[p->n] = k->s;
        p->val[p->n++] = dict->items[2 * i + 1];
    }
}

static const AvPy *params_get(const Params *p, const char *k) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->key[i], k)) return p->val[i];
    return NULL;
}

static int parse_norm(const AvPy *o, const char *what, int *enc, int *dec, char *err) {
    if (!o) return 0;
    const char *s = py_str(o);
    if (!s || av_scvi_parse_norm(s, enc, dec))
        return av_err(err, "unsupported %s value (expected none|encoder|decoder|both)", what);
    return 0;
}

static int config_from_params(const Params *p, AvScviConfig *c, char *err) {
    static const char *known[] = {"n_hidden",
                                  "n_latent",
                                  "n_layers",
                                  "dropout_rate",
                                  "dispersion",
                                  "gene_likelihood",
                                  "use_observed_lib_size",
                                  "latent_distribution",
                                  "encode_covariates",
                                  "deeply_inject_covariates",
                                  "use_batch_norm",
                                  "use_layer_norm",
                                  "log_variational",
                                  "batch_representation",
                                  "use_size_factor_key",
                                  "var_activation",
                                  "extra_encoder_kwargs",
                                  "extra_decoder_kwargs",
                                  "batch_embedding_kwargs"};
    for (int i = 0; i < p->n; i++) {
        int ok = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            ok |= !strcmp(p->key[i], known[k]);
        if (!ok) return av_err(err, "unsupported SCVI option '%s' in init_params_", p->key[i]);
    }
    const AvPy *o;
    int64_t iv;
    double dv;
#define INT_OPT(name, field)                                                                       \
    if ((o = params_get(p, name))) {                                                               \
        if (py_int(o, &iv) || iv < 0 || iv > 1000000)                                              \
            return av_err(err, "init_params_ '%s' is not a valid integer", name);                  \
        c->field = (int)iv;                                                                        \
    }
#define BOOL_OPT(name, field)                                                                      \
    if ((o = params_get(p, name)) && py_bool(o, &c->field))                                        \
        return av_err(err, "init_params_ '%s' is not a bool", name);
    INT_OPT("n_hidden", n_hidden);
    INT_OPT("n_latent", n_latent);
    INT_OPT("n_layers", n_layers);
#undef INT_OPT
    if ((o = params_get(p, "dropout_rate"))) {
        if (py_num(o, &dv) || dv < 0 || dv >= 1)
            return av_err(err, "init_params_ 'dropout_rate' is not in [0, 1)");
        c->dropout_rate = (float)dv;
    }
    if ((o = params_get(p, "dispersion"))) {
        if (!py_str(o) || av_scvi_parse_dispersion(o->s, &c->dispersion))
            return av_err(err, "unsupported dispersion '%s'", py_str(o) ? o->s : "?");
    }
    if ((o = params_get(p, "gene_likelihood"))) {
        if (!py_str(o) || av_scvi_parse_likelihood(o->s, &c->likelihood))
            return av_err(err, "unsupported gene_likelihood '%s' (atlasvi: zinb, nb, poisson)",
                          py_str(o) ? o->s : "?");
    }
    if ((o = params_get(p, "latent_distribution"))) {
        const char *s = py_str(o);
        if (!s || (strcmp(s, "normal") && strcmp(s, "ln")))
            return av_err(err, "unsupported latent_distribution '%s'", s ? s : "?");
        c->latent_ln = !strcmp(s, "ln");
    }
    BOOL_OPT("use_observed_lib_size", use_observed_lib_size);
    BOOL_OPT("encode_covariates", encode_covariates);
    BOOL_OPT("deeply_inject_covariates", deeply_inject_covariates);
    BOOL_OPT("log_variational", log_variational);
#undef BOOL_OPT
    if (parse_norm(params_get(p, "use_batch_norm"), "use_batch_norm", &c->bn_encoder,
                   &c->bn_decoder, err) ||
        parse_norm(params_get(p, "use_layer_norm"), "use_layer_norm", &c->ln_encoder,
                   &c->ln_decoder, err))
        return -1;
    if ((o = params_get(p, "batch_representation")) && (!py_str(o) || strcmp(o->s, "one-hot")))
        return av_err(err, "unsupported batch_representation '%s' (atlasvi: one-hot only)",
                      py_str(o) ? o->s : "?");
    int sf = 0;
    if ((o = params_get(p, "use_size_factor_key")) && (py_bool(o, &sf) || sf))
        return av_err(err, "models with a size factor (use_size_factor_key) are not supported");
    if ((o = params_get(p, "var_activation")) && o->kind != AV_PY_NONE)
        return av_err(err, "a custom var_activation is not supported (atlasvi: exp)");
    static const char *empty_dicts[] = {"extra_encoder_kwargs", "extra_decoder_kwargs",
                                        "batch_embedding_kwargs"};
    for (size_t k = 0; k < 3; k++)
        if ((o = params_get(p, empty_dicts[k])) && o->kind != AV_PY_NONE &&
            !(o->kind == AV_PY_DICT && o->n == 0))
            return av_err(err, "unsupported SCVI option '%s' (not empty)", empty_dicts[k]);
    return 0;
}

/* ---- the registry ---- */

static const AvPy *field_state(const AvPy *fields, const char *name) {
    return av_py_get(av_py_get(fields, name), "state_registry");
}

static int take_strings(const AvPy *o, int64_t *n, char ***items, const char *what, char *err) {
    *n = av_py_strings(o, items);
    if (*n < 0) return av_err(err, "registry: %s is not a list of names", what);
    return 0;
}

static int keys_list(const AvPy *o, int *n, char **keys, const char *what, char *err) {
    *n = 0;
    if (!o || o->kind == AV_PY_NONE) return 0;
    if (o->kind == AV_PY_STR) { /* a single key given as a string */
        keys[(*n)++] = av_strdup(o->s);
        return 0;
    }
    char **items;
    int64_t m = av_py_strings(o, &items);
    if (m < 0) return av_err(err, "setup_args '%s' is not a list of keys", what);
    if (m > AV_MAX_CATS - 2) {
        av_free_strings(items, m);
        return av_err(err, "too many %s (%lld; atlasvi supports %d)", what, (long long)m,
                      AV_MAX_CATS - 2);
    }
    for (int64_t k = 0; k < m; k++) keys[k] = items[k];
    free(items);
    *n = (int)m;
    return 0;
}

static int read_registry(const AvPy *reg, const AvPy *var_names, AvSetup *s, char *err) {
    if (!reg || reg->kind != AV_PY_DICT) return av_err(err, "attr_dict has no registry_");
    const char *name = py_str(av_py_get(reg, "model_name"));
    if (name && strcmp(name, "SCVI"))
        return av_err(err, "this is a %s model; atlasvi imports SCVI models only", name);
    const char *method = py_str(av_py_get(reg, "setup_method_name"));
    if (method && strcmp(method, "setup_anndata"))
        return av_err(err, "models set up with %s are not supported (setup_anndata only)", method);
    const AvPy *args = av_py_get(reg, "setup_args");
    if (!args || args->kind != AV_PY_DICT) return av_err(err, "registry_ has no setup_args");
    for (int64_t i = 0; i < args->n / 2; i++) {
        const char *k = py_str(args->items[2 * i]);
        const AvPy *v = args->items[2 * i + 1];
        static const char *known[] = {"layer", "batch_key", "labels_key",
                                      "categorical_covariate_keys", "continuous_covariate_keys"};
        int ok = 0;
        for (size_t j = 0; j < 5 && k; j++) ok |= !strcmp(k, known[j]);
        if (!ok && v->kind != AV_PY_NONE) {
            if (k && !strcmp(k, "size_factor_key"))
                return av_err(err, "models with a size_factor_key are not supported");
            return av_err(err, "unsupported setup_anndata argument '%s'", k ? k : "?");
        }
    }
    const char *layer, *batch, *labels;
    if (opt_str(av_py_get(args, "layer"), &layer) ||
        opt_str(av_py_get(args, "batch_key"), &batch) ||
        opt_str(av_py_get(args, "labels_key"), &labels))
        return av_err(err, "setup_args: layer, batch_key and labels_key must be str or None");
    s->layer = layer ? av_strdup(layer) : NULL;
    s->batch_key = batch ? av_strdup(batch) : NULL;
    s->labels_key = labels ? av_strdup(labels) : NULL;
    if (keys_list(av_py_get(args, "categorical_covariate_keys"), &s->n_extra_cat, s->cat_keys,
                  "categorical covariates", err) ||
        keys_list(av_py_get(args, "continuous_covariate_keys"), &s->n_cont, s->cont_keys,
                  "continuous covariates", err))
        return -1;

    const AvPy *fields = av_py_get(reg, "field_registries");
    if (!fields || fields->kind != AV_PY_DICT) return av_err(err, "registry_ has no fields");
    static const char *unsupported[] = {"proteins", "atac", "ind_x", "sample"};
    for (size_t k = 0; k < 4; k++)
        if (av_py_get(fields, unsupported[k]))
            return av_err(err, "registry field '%s' is not supported by SCVI import",
                          unsupported[k]);
    const AvPy *sf = av_py_get(av_py_get(fields, "size_factor"), "data_registry");
    if (sf && sf->kind == AV_PY_DICT && sf->n)
        return av_err(err, "models with a size factor are not supported");
    if (take_strings(av_py_get(field_state(fields, "batch"), "categorical_mapping"),
                     &s->n_categories[0], &s->categories[0], "the batch mapping", err) ||
        take_strings(av_py_get(field_state(fields, "labels"), "categorical_mapping"),
                     &s->n_categories[1], &s->categories[1], "the labels mapping", err))
        return -1;
    if (s->n_extra_cat) {
        const AvPy *st = field_state(fields, "extra_categorical_covs");
        const AvPy *maps = av_py_get(st, "mappings");
        for (int k = 0; k < s->n_extra_cat; k++) {
            char what[300];
            snprintf(what, sizeof what, "the mapping of '%.200s'", s->cat_keys[k]);
            if (take_strings(av_py_get(maps, s->cat_keys[k]), &s->n_categories[2 + k],
                             &s->categories[2 + k], what, err))
                return -1;
        }
    }
    if (s->n_cont) {
        char **cols;
        int64_t nc = av_py_strings(
            av_py_get(field_state(fields, "extra_continuous_covs"), "columns"), &cols);
        int same = nc == s->n_cont;
        for (int k = 0; same && k < s->n_cont; k++) same = !strcmp(cols[k], s->cont_keys[k]);
        if (nc >= 0) av_free_strings(cols, nc);
        if (!same) return av_err(err, "registry: continuous covariate columns disagree with keys");
    }
    if (var_names && var_names->kind == AV_PY_DICT)
        return av_err(err, "MuData models (var_names per modality) are not supported");
    const AvPy *vn = var_names ? var_names : av_py_get(field_state(fields, "X"), "column_names");
    if (take_strings(vn, &s->n_vars, &s->var_names, "var_names", err)) return -1;
    return 0;
}

/* ---- weights ---- */

static void torch_shape(const AvTensor *t, int *ndim, int64_t *shape) {
    if (t->transposed) {
        *ndim = 2;
        shape[0] = t->cols;
        shape[1] = t->rows;
    } else if (t->rows == 1 && strncmp(t->name, "library_log_", 12)) {
        *ndim = 1;
        shape[0] = t->cols;
    } else {
        *ndim = 2;
        shape[0] = t->rows;
        shape[1] = t->cols;
    }
}

/* The state-dict entry of t (its index in sd in *at): a tensor of t's shape whose storage
 * the archive holds. Checked before anything of that size is allocated. */
static const AvPy *checked_weight(AvTorchFile *tf, const AvPy *sd, const AvTensor *t, int64_t *at,
                                  char *err) {
    const AvPy *x = NULL;
    for (int64_t i = 0; i < sd->n / 2; i++) {
        const char *k = py_str(sd->items[2 * i]);
        if (k && !strcmp(k, t->name)) {
            x = sd->items[2 * i + 1];
            *at = i;
        }
    }
    if (!x)
        return av_err(err, "model_state_dict lacks '%s' (options and weights disagree)", t->name),
               NULL;
    if (x->kind != AV_PY_TENSOR)
        return av_err(err, "state-dict entry '%s' is not a tensor", t->name), NULL;
    int nd;
    int64_t shape[2];
    torch_shape(t, &nd, shape);
    int ok = x->ndim == nd;
    for (int k = 0; ok && k < nd; k++) ok = x->shape[k] == shape[k];
    if (!ok) {
        char got[128] = "", want[128] = "";
        for (int k = 0; k < x->ndim; k++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? ", " : "",
                     (long long)x->shape[k]);
        for (int k = 0; k < nd; k++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", k ? ", " : "",
                     (long long)shape[k]);
        return av_err(err, "state-dict entry '%s' has shape [%s], expected [%s]", t->name, got,
                      want),
               NULL;
    }
    char terr[AV_ERRLEN];
    if (av_torch_tensor_check(tf, x, terr))
        return av_err(err, "state-dict entry '%s': %s", t->name, terr), NULL;
    return x;
}

/* Every parameter the options declare against the state dict, before av_scvi_build
 * allocates them: a model.pt declaring n_latent 10^6 over small tensors is refused here. */
static int check_declared_weights(AvTorchFile *tf, const AvPy *sd, const AvScviConfig *c,
                                  char *err) {
    AvGraph decl;
    av_scvi_declare_params(&decl, c);
    int rc = 0;
    int64_t at;
    for (int i = 0; i < decl.n_params && !rc; i++)
        rc = checked_weight(tf, sd, decl.params[i], &at, err) ? 0 : -1;
    av_graph_free(&decl);
    return rc;
}

static int copy_weight(AvTorchFile *tf, const AvPy *sd, AvTensor *t, int *used, char *err) {
    int64_t at = 0;
    const AvPy *x = checked_weight(tf, sd, t, &at, err);
    if (!x) return -1;
    used[at] = 1;
    int64_t n = t->rows * t->cols;
    float *tmp = av_malloc(sizeof(float) * (size_t)n + 1);
    char terr[AV_ERRLEN];
    if (av_torch_tensor_f32(tf, x, tmp, terr)) {
        free(tmp);
        return av_err(err, "state-dict entry '%s': %s", t->name, terr);
    }
    int64_t r = t->rows, c = t->cols;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++)
            t->v[i * c + j] = tmp[t->transposed ? j * r + i : i * c + j];
    free(tmp);
    return 0;
}

static int import_dir(const char *dir, const char *out, char *err) {
    struct stat sb;
    char *path;
    size_t n = strlen(dir) + 32;
    path = av_malloc(n);
    if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(path, n, "%s/model.pt", dir);
        if (access(path, F_OK)) {
            char legacy[4096];
            snprintf(legacy, sizeof legacy, "%s/model_params.pt", dir);
            if (!access(legacy, F_OK))
                av_err(err,
                       "'%s' is a pre-0.15 scvi-tools save (model_params.pt); convert it "
                       "with scvi.model.SCVI.convert_legacy_save first",
                       dir);
            else
                av_err(err, "'%s' has no model.pt (not a scvi-tools model directory)", dir);
            free(path);
            return -1;
        }
    } else {
        snprintf(path, n, "%s", dir);
    }
    AvPy *root;
    AvTorchFile *tf = av_torch_load(path, &root, err);
    if (!tf) {
        free(path);
        return -1;
    }
    AvScvi m;
    int built = 0;
    AvSetup s;
    memset(&s, 0, sizeof s);
    int rc = 0;
    const AvPy *sd = av_py_get(root, "model_state_dict"), *attr = av_py_get(root, "attr_dict");
    if (!sd || sd->kind != AV_PY_DICT || !attr || attr->kind != AV_PY_DICT)
        rc = av_err(err, "%s: not a scvi-tools model (no model_state_dict / attr_dict)", path);
    if (!rc && av_py_get(attr, "scvi_setup_dict_"))
        rc = av_err(err, "%s: pre-0.15 registry; convert with convert_legacy_save first", path);
    char rerr[AV_ERRLEN];
    if (!rc && read_registry(av_py_get(attr, "registry_"), av_py_get(root, "var_names"), &s, rerr))
        rc = av_err(err, "%s: %s", path, rerr);
    AvScviConfig c;
    av_scvi_defaults(&c);
    if (!rc) {
        const AvPy *ip = av_py_get(attr, "init_params_");
        Params p = {0};
        if (!ip || ip->kind != AV_PY_DICT) {
            rc = av_err(err, "%s: attr_dict has no init_params_", path);
        } else if (av_py_get(ip, "non_kwargs")) {
            params_add(&p, av_py_get(ip, "non_kwargs"));
            const AvPy *kw = av_py_get(ip, "kwargs");
            for (int64_t i = 0; kw && kw->kind == AV_PY_DICT && i < kw->n / 2; i++)
                params_add(&p, kw->items[2 * i + 1]);
        } else { /* older layout: plain values, dicts hold the extra kwargs */
            for (int64_t i = 0; i < ip->n / 2; i++) {
                const AvPy *k = ip->items[2 * i], *v = ip->items[2 * i + 1];
                if (v->kind == AV_PY_DICT)
                    params_add(&p, v);
                else if (k->kind == AV_PY_STR && strcmp(k->s, "use_cuda") && p.n < 64) {
                    p.key[p.n] = k->s;
                    p.val[p.n++] = v;
                }
            }
        }
        char perr[AV_ERRLEN];
        if (!rc && config_from_params(&p, &c, perr)) rc = av_err(err, "%s: %s", path, perr);
    }
    if (!rc) {
        c.n_input = s.n_vars;
        c.n_batch = (int)s.n_categories[0];
        c.n_labels = (int)s.n_categories[1];
        c.n_cont = s.n_cont;
        c.n_extra_cat = s.n_extra_cat;
        for (int k = 0; k < s.n_extra_cat; k++) c.extra_cat_sizes[k] = (int)s.n_categories[2 + k];
        char cerr[AV_ERRLEN];
        if (c.n_input < 1 || c.n_batch < 1 || c.n_labels < 1)
            rc = av_err(err, "%s: the registry has no genes, batches or labels", path);
        else if (av_scvi_check_config(&c, cerr))
            rc = av_err(err, "%s: init_params_ / registry: %s", path, cerr);
        else if (check_declared_weights(tf, sd, &c, cerr))
            rc = av_err(err, "%s: %s", path, cerr);
    }
    if (!rc) {
        av_scvi_build(&m, &c, 1, 0);
        built = 1;
        int *used = av_calloc((size_t)(sd->n / 2) + 1, sizeof(int));
        char werr[AV_ERRLEN];
        for (int i = 0; i < m.g.n_params && !rc; i++)
            if (copy_weight(tf, sd, m.g.params[i], used, werr))
                rc = av_err(err, "%s: %s", path, werr);
        for (int i = 0; i < m.g.n_buffers && !rc; i++)
            if (copy_weight(tf, sd, m.g.buffers[i], used, werr))
                rc = av_err(err, "%s: %s", path, werr);
        for (int64_t i = 0; i < sd->n / 2 && !rc; i++) {
            const char *k = py_str(sd->items[2 * i]);
            if (used[i] || !k || !strcmp(k, "pyro_param_store")) continue;
            size_t kl = strlen(k);
            if (kl > 20 && !strcmp(k + kl - 20, ".num_batches_tracked")) continue;
            if (!strncmp(k, "_embeddings_dict.", 17))
                rc = av_err(err,
                            "%s: batch embeddings (batch_representation='embedding') are "
                            "not supported",
                            path);
            else
                rc = av_err(err,
                            "%s: unexpected state-dict entry '%s' (a module atlasvi does not "
                            "have)",
                            path, k);
        }
        free(used);
    }
    if (!rc) rc = av_model_save(out, &m, &s, NULL, NULL, err);
    const char *ver = rc ? NULL : py_str(av_py_get(av_py_get(attr, "registry_"), "scvi_version"));
    if (!rc)
        printf("atlasvi: wrote %s (SCVI from scvi-tools %s: %lld genes, %d batch(es), %d latent, "
               "%s, %s)\n",
               out, ver ? ver : "?", (long long)c.n_input, c.n_batch, c.n_latent,
               av_scvi_likelihood_name(c.likelihood), av_scvi_dispersion_name(c.dispersion));
    if (built) av_scvi_free(&m);
    av_setup_free(&s);
    av_torch_close(tf);
    free(path);
    return rc;
}

int av_cmd_import(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL};
    int npos = 0, bad = 0;
    char err[AV_ERRLEN] = "";
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (dist_rank() == 0) usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            bad = av_err(err, "unknown option '%s'", argv[i]);
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            bad = av_err(err, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!bad && npos < 2) bad = av_err(err, "import needs DIR and MODEL.h5");
    if (bad) {
        if (dist_rank() == 0) {
            fprintf(stderr, "atlasvi: error: %s\n", err);
            usage(stderr);
        }
        return 2;
    }
    int rc = dist_rank() == 0 ? import_dir(pos[0], pos[1], err) : 0;
    return dist_any_failed(rc != 0, err) ? 1 : 0;
}
