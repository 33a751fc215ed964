/* Option parsing with scvi-tools' argument names in kebab case, and writing results. */
#include "src/cmd_common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist/dist.h"
#include "io/output.h"
#include "src/cli.h"
#include "src/util.h"

void av_run_defaults(AvRunOptions *r) {
    memset(r, 0, sizeof *r);
    r->latent_key = "X_scVI";
    r->library_size = 1.0f;
    r->n_samples = 1;
}

int av_parse_int(const char *v, const char *name, long lo, long hi, int *out, char *err) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        return av_err(err, "%s expects an integer in [%ld, %ld], got '%s'", name, lo, hi, v) != 0;
    *out = (int)x;
    return 0;
}

int av_parse_double(const char *v, const char *name, double lo, double hi, double *out, char *err) {
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= lo && x <= hi))
        return av_err(err, "%s expects a number in [%g, %g], got '%s'", name, lo, hi, v) != 0;
    *out = x;
    return 0;
}

int av_parse_float(const char *v, const char *name, double lo, double hi, float *out, char *err) {
    double x = 0;
    if (av_parse_double(v, name, lo, hi, &x, err)) return 1;
    *out = (float)x;
    return 0;
}

static int parse_bool(const char *v, const char *name, int *out, char *err) {
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "1")) return *out = 1, 0;
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "0")) return *out = 0, 0;
    return av_err(err, "%s expects true or false, got '%s'", name, v) != 0;
}

/* Splits "a,b,c" into at most max keys. */
static int split_keys(const char *v, const char *name, char **keys, int max, int *n, char *err) {
    *n = 0;
    const char *p = v;
    while (*p) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (*n == max) return av_err(err, "%s: at most %d keys", name, max) != 0;
        if (len == 0) return av_err(err, "%s: empty key in '%s'", name, v) != 0;
        keys[*n] = av_malloc(len + 1);
        memcpy(keys[*n], p, len);
        keys[(*n)++][len] = 0;
        p += len + (q ? 1 : 0);
    }
    return 0;
}

int av_parse_setup_option(int argc, char **argv, int *i, AvSetup *s, AvScviConfig *c, char *err) {
    int missing = 0;
    const char *v;
    (void)c;
    if ((v = av_opt(argc, argv, i, "--layer", &missing))) {
        free(s->layer);
        s->layer = av_strdup(v);
    } else if ((v = av_opt(argc, argv, i, "--batch-key", &missing))) {
        free(s->batch_key);
        s->batch_key = av_strdup(v);
    } else if ((v = av_opt(argc, argv, i, "--labels-key", &missing))) {
        free(s->labels_key);
        s->labels_key = av_strdup(v);
    } else if ((v = av_opt(argc, argv, i, "--categorical-covariate-keys", &missing))) {
        split_keys(v, "--categorical-covariate-keys", s->cat_keys, AV_MAX_CATS - 2, &s->n_extra_cat,
                   err);
    } else if ((v = av_opt(argc, argv, i, "--continuous-covariate-keys", &missing))) {
        split_keys(v, "--continuous-covariate-keys", s->cont_keys, AV_MAX_CATS, &s->n_cont, err);
    } else {
        if (missing) av_err(err, "option '%s' needs a value", argv[*i]);
        return missing;
    }
    return 1;
}

static int parse_norm(const char *v, const char *name, int *enc, int *dec, char *err) {
    if (av_scvi_parse_norm(v, enc, dec))
        return av_err(err, "%s expects none, encoder, decoder or both, got '%s'", name, v) != 0;
    return 0;
}

int av_parse_model_option(int argc, char **argv, int *i, AvScviConfig *c, char *err) {
    int missing = 0;
    const char *v, *a = argv[*i];
    if ((v = av_opt(argc, argv, i, "--n-hidden", &missing))) {
        av_parse_int(v, a, 1, 1 << 16, &c->n_hidden, err);
    } else if ((v = av_opt(argc, argv, i, "--n-latent", &missing))) {
        av_parse_int(v, a, 1, 256, &c->n_latent, err);
    } else if ((v = av_opt(argc, argv, i, "--n-layers", &missing))) {
        av_parse_int(v, a, 1, 8, &c->n_layers, err);
    } else if ((v = av_opt(argc, argv, i, "--dropout-rate", &missing))) {
        av_parse_float(v, a, 0, 0.99, &c->dropout_rate, err);
    } else if ((v = av_opt(argc, argv, i, "--dispersion", &missing))) {
        if (av_scvi_parse_dispersion(v, &c->dispersion))
            av_err(err, "--dispersion expects gene, gene-batch, gene-label or gene-cell, got '%s'",
                   v);
    } else if ((v = av_opt(argc, argv, i, "--gene-likelihood", &missing))) {
        if (av_scvi_parse_likelihood(v, &c->likelihood))
            av_err(err, "--gene-likelihood expects zinb, nb or poisson, got '%s'", v);
    } else if ((v = av_opt(argc, argv, i, "--latent-distribution", &missing))) {
        if (strcmp(v, "normal") && strcmp(v, "ln"))
            av_err(err, "--latent-distribution expects normal or ln, got '%s'", v);
        c->latent_ln = !strcmp(v, "ln");
    } else if ((v = av_opt(argc, argv, i, "--use-observed-lib-size", &missing))) {
        parse_bool(v, a, &c->use_observed_lib_size, err);
    } else if ((v = av_opt(argc, argv, i, "--encode-covariates", &missing))) {
        parse_bool(v, a, &c->encode_covariates, err);
    } else if ((v = av_opt(argc, argv, i, "--deeply-inject-covariates", &missing))) {
        parse_bool(v, a, &c->deeply_inject_covariates, err);
    } else if ((v = av_opt(argc, argv, i, "--use-batch-norm", &missing))) {
        parse_norm(v, a, &c->bn_encoder, &c->bn_decoder, err);
    } else if ((v = av_opt(argc, argv, i, "--use-layer-norm", &missing))) {
        parse_norm(v, a, &c->ln_encoder, &c->ln_decoder, err);
    } else {
        if (missing) av_err(err, "option '%s' needs a value", a);
        return missing;
    }
    return 1;
}

int av_parse_run_option(int argc, char **argv, int *i, AvRunOptions *r, char *err) {
    int missing = 0, seed = 0;
    const char *v, *a = argv[*i];
    if ((v = av_opt(argc, argv, i, "--output", &missing)) ||
        (v = av_opt(argc, argv, i, "-o", &missing))) {
        r->output = v;
    } else if (!strcmp(a, "--write-input")) {
        r->inplace = 1;
    } else if ((v = av_opt(argc, argv, i, "--latent-key", &missing))) {
        r->latent_key = v;
    } else if ((v = av_opt(argc, argv, i, "--model-out", &missing))) {
        r->model_out = v;
    } else if ((v = av_opt(argc, argv, i, "--seed", &missing))) {
        if (!av_parse_int(v, a, 0, 2147483647, &seed, err)) r->seed = (uint64_t)seed;
    } else if ((v = av_opt(argc, argv, i, "--threads", &missing))) {
        av_parse_int(v, a, 1, 1024, &r->threads, err);
    } else if ((v = av_opt(argc, argv, i, "--normalized-layer", &missing))) {
        r->normalized_layer = v;
    } else if ((v = av_opt(argc, argv, i, "--library-size", &missing))) {
        av_parse_float(v, a, 1e-12, 1e12, &r->library_size, err);
    } else if ((v = av_opt(argc, argv, i, "--n-samples", &missing))) {
        av_parse_int(v, a, 1, 100000, &r->n_samples, err);
    } else if ((v = av_opt(argc, argv, i, "--transform-batch", &missing))) {
        r->transform_batch = v;
    } else {
        if (missing) av_err(err, "option '%s' needs a value", a);
        return missing;
    }
    return 1;
}

int av_finish_run(const AvRunOptions *r, const char *input, const AvSetup *s, AvScvi *m,
                  const AvTrainData *d, const AvOptState *st, const AvHistory *h, char *err) {
    AvComm comm = av_comm_world();
    int64_t n = d->x.n_rows, L = m->cfg.n_latent, G = m->cfg.n_input;
    float *z = NULL, *norm = NULL, *z_all = NULL, *norm_all = NULL;
    int rc = 0, tb = -1;
    if (r->transform_batch) {
        for (int64_t b = 0; b < s->n_categories[0]; b++)
            if (!strcmp(s->categories[0][b], r->transform_batch)) tb = (int)b;
        if (tb < 0)
            rc = av_err(err, "--transform-batch '%s' is not a batch category of the model",
                        r->transform_batch);
    }
    if (dist_any_failed(rc, err)) return -1;
    if (r->output || r->inplace) {
        z = av_malloc(sizeof(float) * (size_t)(n * L + 1));
        av_latent(m, d, &comm, 128, z, NULL);
        z_all = av_gather_rows(z, n, L, d->n_obs);
        if (r->normalized_layer) {
            norm = av_malloc(sizeof(float) * (size_t)(n * G + 1));
            av_normalized(m, d, &comm, 128, r->n_samples, tb, r->library_size, norm);
            norm_all = av_gather_rows(norm, n, G, d->n_obs);
        }
        AvOutputSpec o = {input,         s->layer, r->output, r->inplace,          d->n_obs, G,
                          r->latent_key, z_all,    L,         r->normalized_layer, norm_all};
        rc = av_write_results(&o, err);
        if (!rc && dist_rank() == 0 && r->inplace)
            fprintf(stderr, "atlasvi: wrote obsm/%s to %s\n", r->latent_key, input);
        if (!rc && dist_rank() == 0 && r->output)
            fprintf(stderr, "atlasvi: wrote obsm/%s%s%s to %s\n", r->latent_key,
                    r->normalized_layer ? " and layers/" : "",
                    r->normalized_layer ? r->normalized_layer : "", r->output);
    }
    if (!rc && r->model_out) {
        int lrc = dist_rank() == 0 ? av_model_save(r->model_out, m, s, st, h, err) : 0;
        rc = dist_any_failed(lrc, err) ? -1 : 0;
        if (!rc && dist_rank() == 0) fprintf(stderr, "atlasvi: wrote model %s\n", r->model_out);
    }
    free(z);
    free(norm);
    free(z_all);
    free(norm_all);
    return rc;
}

/* Whether two paths name the same file (the same name, or the same inode when both exist). */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (!a || !b) return 0;
    if (!strcmp(a, b)) return 1;
    return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* An existing device, FIFO or socket (/dev/null): written in place, any number of times. */
static int special_file(const char *path) {
    struct stat st;
    return !stat(path, &st) && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

/* The file name of path fits the folder's file system (NAME_MAX), so that the failure
 * does not wait until the end of a run. */
static int name_fits(const char *path, const char *dir, const char *opt, char *err) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    long max = pathconf(dir, _PC_NAME_MAX);
    if (max <= 0) max = NAME_MAX;
    if (strlen(path) >= PATH_MAX || (long)strlen(base) > max)
        return av_err(err, "%s: the name '%.40s...' is too long (%zu characters; at most %ld)", opt,
                      base, strlen(base), max);
    return 0;
}

/* A file can be created at path: not a folder, and its folder exists and is writable (or
 * path is an existing device or FIFO that can be written, as /dev/null). */
static int writable_place(const char *path, const char *opt, char *err) {
    struct stat st;
    if (!stat(path, &st) && S_ISDIR(st.st_mode))
        return av_err(err, "%s '%s' is a folder; give a file name", opt, path);
    if (special_file(path)) {
        if (access(path, W_OK) != 0) return av_err(err, "%s '%s' is not writable", opt, path);
        return 0;
    }
    char *dir = av_strdup(path);
    char *slash = strrchr(dir, '/');
    const char *d = dir;
    if (!slash)
        d = ".";
    else if (slash == dir)
        d = "/";
    else
        *slash = 0;
    int rc = 0;
    if (access(d, W_OK | X_OK) != 0)
        rc = av_err(err, "%s '%s': the folder '%s' %s", opt, path, d,
                    errno == ENOENT ? "does not exist" : "is not writable");
    else
        rc = name_fits(path, d, opt, err);
    free(dir);
    return rc;
}

int av_check_outputs(const AvRunOptions *r, const char *input, const char *model_in,
                     const char *metrics, const char *checkpoint, char *err) {
    int rc = 0;
    if ((r->output || r->inplace) && !av_key_ok(r->latent_key))
        rc =
            av_err(err, "invalid --latent-key '%s' (no '/', not starting with '.')", r->latent_key);
    else if (r->normalized_layer && !av_key_ok(r->normalized_layer))
        rc = av_err(err, "invalid --normalized-layer '%s' (no '/', not starting with '.')",
                    r->normalized_layer);
    if (dist_rank() == 0 && !rc) {
        const char *out[4] = {r->output, r->model_out,
                              metrics && strcmp(metrics, "-") ? metrics : NULL, checkpoint};
        static const char *const opt[4] = {"--output", "--model-out", "--metrics", "--checkpoint"};
        if (r->inplace && input && !access(input, F_OK) && access(input, W_OK))
            rc = av_err(err, "--write-input: '%s' is not writable", input);
        for (int i = 0; i < 4 && !rc; i++) {
            if (!out[i]) continue;
            int model_file = i == 1 || i == 3;
            if (same_file(out[i], input))
                rc = av_err(err, "%s '%s' is the input file, which would be overwritten%s", opt[i],
                            out[i], i == 0 ? " (--write-input adds obsm to the input)" : "");
            else if (!model_file && same_file(out[i], model_in))
                rc = av_err(err, "%s '%s' is the model file being read, which would be overwritten",
                            opt[i], out[i]);
            else
                rc = writable_place(out[i], opt[i], err);
            for (int j = 0; j < i && !rc && !special_file(out[i]); j++)
                if (!(model_file && (j == 1 || j == 3)) && same_file(out[i], out[j]))
                    rc = av_err(err, "%s and %s both name '%s'", opt[j], opt[i], out[i]);
        }
    }
    return dist_any_failed(rc, err) ? -1 : 0;
}

static void apply_usage(int normalize) {
    printf("usage: atlasvi %s MODEL.h5 INPUT --output OUT.h5ad | --write-input [options]\n\n",
           normalize ? "normalize" : "latent");
    printf("Applies a saved scVI model to INPUT (the same genes, in the same order; batch and\n"
           "covariate categories known to the model) and writes %s.\n\n",
           normalize ? "layers/<name> (and obsm)" : "obsm/<latent key>");
    printf("  --output OUT.h5ad        new .h5ad with obs, var and the result\n"
           "  --write-input            write obsm into INPUT itself, atomically\n"
           "  --latent-key X_scVI      obsm key of the latent\n");
    if (normalize)
        printf("  --normalized-layer scvi_normalized   layer name\n"
               "  --library-size 1         scale of rho (1e4: counts per 10k)\n"
               "  --n-samples 1            posterior samples averaged\n"
               "  --transform-batch B      decode every cell in batch B\n");
    printf("  --seed 0  --threads T\n");
}

int av_cmd_apply(int argc, char **argv, int normalize) {
    AvRunOptions ro;
    av_run_defaults(&ro);
    if (normalize) ro.normalized_layer = "scvi_normalized";
    const char *pos[2] = {NULL, NULL};
    int npos = 0, bad = 0;
    char err[AV_ERRLEN] = "";
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (dist_rank() == 0) apply_usage(normalize);
            return 0;
        }
        if (av_parse_run_option(argc, argv, &i, &ro, err)) {
            bad = *err != 0;
        } else if (argv[i][0] == '-') {
            bad = av_err(err, "unknown option '%s'", argv[i]) != 0;
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            bad = av_err(err, "unexpected argument '%s'", argv[i]) != 0;
        }
    }
    if (!bad && npos < 2) bad = av_err(err, "need MODEL.h5 and INPUT (see --help)") != 0;
    if (!bad && !ro.output && !ro.inplace)
        bad = av_err(err, "give --output OUT.h5ad or --write-input") != 0;
    if (!bad && normalize && ro.inplace && !ro.output)
        bad = av_err(err, "normalize writes a layer: give --output OUT.h5ad") != 0;
    if (bad) {
        if (dist_rank() == 0) fprintf(stderr, "atlasvi: error: %s\n", err);
        return 1;
    }
    if (av_check_outputs(&ro, pos[1], pos[0], NULL, NULL, err)) return 1;
    if (ro.threads > 0) omp_set_num_threads(ro.threads);
    AvScvi m = {0};
    AvSetup saved = {0}, s = {0};
    AvTrainData d = {0};
    int rc = av_model_load(pos[0], &m, &saved, NULL, NULL, 128, err);
    if (dist_any_failed(rc, err)) return 1;
    m.g.seed = ro.seed;
    av_setup_copy_keys(&s, &saved);
    rc = av_setup_load(&s, pos[1], &saved, &d, err);
    if (!rc) rc = av_finish_run(&ro, pos[1], &s, &m, &d, NULL, NULL, err);
    av_train_data_free(&d);
    av_setup_free(&s);
    av_setup_free(&saved);
    av_scvi_free(&m);
    return rc ? 1 : 0;
}
