/* train --resume: the model file fixes the configuration and the registry, so options
 * that contradict it are an error; training options may change and are reported. */
#include <stdio.h>
#include <string.h>

#include "src/cmd_common.h"
#include "src/util.h"

void av_given_add(AvGivenOptions *g, const char *arg, const char *value) {
    if (g->n == AV_MAX_GIVEN || strncmp(arg, "--", 2)) return;
    g->arg[g->n] = arg;
    g->value[g->n++] = value;
}

/* arg is the option name, with or without "=value" */
static int is_option(const char *arg, const char *name) {
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == 0 || arg[n] == '=');
}

static const char *yes_no(int v) {
    return v ? "true" : "false";
}

/* The value of a model option in the command line's spelling; NULL for other options. */
static const char *model_value(const AvScviConfig *c, const char *arg, char *buf, size_t n) {
    if (is_option(arg, "--n-hidden")) return snprintf(buf, n, "%d", c->n_hidden), buf;
    if (is_option(arg, "--n-latent")) return snprintf(buf, n, "%d", c->n_latent), buf;
    if (is_option(arg, "--n-layers")) return snprintf(buf, n, "%d", c->n_layers), buf;
    if (is_option(arg, "--dropout-rate")) return snprintf(buf, n, "%g", c->dropout_rate), buf;
    if (is_option(arg, "--dispersion")) return av_scvi_dispersion_name(c->dispersion);
    if (is_option(arg, "--gene-likelihood")) return av_scvi_likelihood_name(c->likelihood);
    if (is_option(arg, "--latent-distribution")) return c->latent_ln ? "ln" : "normal";
    if (is_option(arg, "--use-observed-lib-size")) return yes_no(c->use_observed_lib_size);
    if (is_option(arg, "--encode-covariates")) return yes_no(c->encode_covariates);
    if (is_option(arg, "--deeply-inject-covariates")) return yes_no(c->deeply_inject_covariates);
    if (is_option(arg, "--use-batch-norm")) return av_scvi_norm_name(c->bn_encoder, c->bn_decoder);
    if (is_option(arg, "--use-layer-norm")) return av_scvi_norm_name(c->ln_encoder, c->ln_decoder);
    return NULL;
}

static const char *join_keys(char *const *keys, int n, char *buf, size_t size) {
    buf[0] = 0;
    for (int k = 0; k < n; k++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", k ? "," : "", keys[k]);
    return n ? buf : "(none)";
}

/* The value of a registry option; NULL for other options. */
static const char *setup_value(const AvSetup *s, const char *arg, char *buf, size_t n) {
    if (is_option(arg, "--layer")) return s->layer ? s->layer : "(none: X)";
    if (is_option(arg, "--batch-key")) return s->batch_key ? s->batch_key : "(none)";
    if (is_option(arg, "--labels-key")) return s->labels_key ? s->labels_key : "(none)";
    if (is_option(arg, "--categorical-covariate-keys"))
        return join_keys(s->cat_keys, s->n_extra_cat, buf, n);
    if (is_option(arg, "--continuous-covariate-keys"))
        return join_keys(s->cont_keys, s->n_cont, buf, n);
    return NULL;
}

static void option_name(const char *arg, char *buf, size_t n) {
    size_t len = strcspn(arg, "=");
    snprintf(buf, n, "%.*s", (int)(len < n ? len : n - 1), arg);
}

int av_resume_check(const char *model_path, const AvGivenOptions *g, const AvScviConfig *given_cfg,
                    const AvSetup *given_setup, const AvScviConfig *model_cfg,
                    const AvSetup *model_setup, char *err) {
    char list[AV_ERRLEN] = "", name[64], a[256], b[256];
    int n_bad = 0;
    for (int i = 0; i < g->n; i++) {
        const char *mine = model_value(given_cfg, g->arg[i], a, sizeof a);
        const char *theirs = model_value(model_cfg, g->arg[i], b, sizeof b);
        if (!mine) {
            mine = setup_value(given_setup, g->arg[i], a, sizeof a);
            theirs = setup_value(model_setup, g->arg[i], b, sizeof b);
        }
        if (!mine || !strcmp(mine, theirs)) continue;
        option_name(g->arg[i], name, sizeof name);
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s %s (the model: %s)",
                 n_bad++ ? ", " : "", name, mine, theirs);
    }
    if (!n_bad) return 0;
    return av_err(err,
                  "--resume %s: %s contradict%s the model; a resumed model keeps its "
                  "configuration and registry (leave %s out, or train a new model)",
                  model_path, list, n_bad > 1 ? "" : "s", n_bad > 1 ? "them" : "it");
}

/* Training options, which may change on resume. */
static const char *const training_options[] = {"--max-epochs",
                                               "--batch-size",
                                               "--train-size",
                                               "--lr",
                                               "--weight-decay",
                                               "--n-epochs-kl-warmup",
                                               "--early-stopping",
                                               "--early-stopping-patience",
                                               "--reduce-lr-on-plateau",
                                               "--lr-patience",
                                               "--lr-factor",
                                               "--check-val-every-n-epoch",
                                               "--checkpoint-every",
                                               "--max-steps",
                                               "--seed"};

const char *av_resume_changes(const AvGivenOptions *g, float model_lr, float lr, char *buf,
                              size_t n) {
    buf[0] = 0;
    char name[64];
    for (int i = 0; i < g->n; i++) {
        int training = 0;
        for (size_t k = 0; k < sizeof training_options / sizeof training_options[0]; k++)
            training |= is_option(g->arg[i], training_options[k]);
        if (!training) continue;
        option_name(g->arg[i], name, sizeof name);
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%s%s%s", *buf ? ", " : "", name,
                 g->value[i] ? " " : "", g->value[i] ? g->value[i] : "");
        if (!strcmp(name, "--lr"))
            snprintf(buf + strlen(buf), n - strlen(buf), " (the model: %g, now %g)", model_lr, lr);
    }
    return *buf ? buf : "none";
}
