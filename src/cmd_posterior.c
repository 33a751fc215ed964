/* atlasvi posterior: scvi-tools' ELBO, reconstruction error, marginal log-likelihood and
 * posterior predictive samples (model-spec.md 7.4, 7.5) of a saved model on a file. Each
 * rank evaluates its own cells; sums are reduced and samples gathered to rank 0, which
 * prints the scalars as JSON and writes the samples as layers. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "src/app_de.h"
#include "src/cli.h"
#include "src/cmd_common.h"
#include "src/rng.h"
#include "src/util.h"

typedef struct {
    int elbo, rec, marginal, n_mc, n_pp, threads;
    const char *output, *layer_name;
    uint64_t seed;
} PostOptions;

static void usage(void) {
    printf("usage: atlasvi posterior MODEL.h5 INPUT [--elbo] [--reconstruction-error]\n"
           "                         [--marginal-ll [--n-mc-samples 1000]]\n"
           "                         [--posterior-predictive N --output OUT.h5ad]\n\n"
           "Posterior quantities of a saved scVI model on INPUT, as scvi-tools computes them:\n"
           "  --elbo                  get_elbo(): -mean over cells of (reconstruction + KL),\n"
           "                          one posterior sample per cell, KL unweighted\n"
           "  --reconstruction-error  get_reconstruction_error(): mean reconstruction loss\n"
           "  --marginal-ll           get_marginal_ll(): importance sampling with the encoder\n"
           "                          as proposal, mean of the means of 128-cell minibatches\n"
           "  --n-mc-samples 1000     importance samples per cell\n"
           "  --posterior-predictive N   N count samples per cell from the likelihood,\n"
           "                          written as layers of --output (posterior_predictive,\n"
           "                          or posterior_predictive_0 ... _N-1 when N > 1)\n"
           "  --layer-name NAME       layer name instead of posterior_predictive\n"
           "  --output OUT.h5ad       new .h5ad with obs, var and the sample layers\n"
           "  --seed 0  --threads T\n"
           "Scalars are printed on stdout as one JSON object.\n");
}

static int parse(int argc, char **argv, PostOptions *o, const char **pos, char *err) {
    int npos = 0, missing = 0;
    const char *v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc = 0, seed = 0;
        if (!strcmp(a, "--elbo")) {
            o->elbo = 1;
        } else if (!strcmp(a, "--reconstruction-error")) {
            o->rec = 1;
        } else if (!strcmp(a, "--marginal-ll")) {
            o->marginal = 1;
        } else if ((v = av_opt(argc, argv, &i, "--n-mc-samples", &missing))) {
            rc = av_parse_int(v, a, 1, 10000000, &o->n_mc, err);
        } else if ((v = av_opt(argc, argv, &i, "--posterior-predictive", &missing))) {
            rc = av_parse_int(v, a, 1, 1000, &o->n_pp, err);
        } else if ((v = av_opt(argc, argv, &i, "--layer-name", &missing))) {
            o->layer_name = v;
        } else if ((v = av_opt(argc, argv, &i, "--output", &missing)) ||
                   (v = av_opt(argc, argv, &i, "-o", &missing))) {
            o->output = v;
        } else if ((v = av_opt(argc, argv, &i, "--seed", &missing))) {
            rc = av_parse_int(v, a, 0, 2147483647, &seed, err);
            o->seed = (uint64_t)seed;
        } else if ((v = av_opt(argc, argv, &i, "--threads", &missing))) {
            rc = av_parse_int(v, a, 1, 1024, &o->threads, err);
        } else if (missing) {
            return av_err(err, "option '%s' needs a value", a);
        } else if (a[0] == '-') {
            return av_err(err, "unknown option '%s'", a);
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            return av_err(err, "unexpected argument '%s'", a);
        }
        if (rc) return rc;
    }
    if (npos < 2) return av_err(err, "need MODEL.h5 and INPUT (see --help)");
    if (!o->elbo && !o->rec && !o->marginal && !o->n_pp)
        return av_err(err, "nothing to compute: give --elbo, --reconstruction-error, "
                           "--marginal-ll or --posterior-predictive N");
    if (o->n_pp && !o->output)
        return av_err(err, "--posterior-predictive writes layers: give --output OUT.h5ad");
    if (o->output && !o->n_pp) return av_err(err, "--output is for --posterior-predictive N");
    return 0;
}

/* The count likelihood node of the graph (its inputs are rho, log library, theta, pi). */
static const AvNode *nll_node(const AvScvi *m) {
    for (int i = 0; i < m->g.n_nodes; i++)
        if (m->g.nodes[i].out == m->rec) return &m->g.nodes[i];
    return NULL;
}

#define LOG_2PI 1.8378770664093453

/* log N(x; mu, sqrt(var)) summed over k entries */
static double log_normal(const float *x, const float *mu, const float *var, int64_t k) {
    double s = 0;
    for (int64_t j = 0; j < k; j++) {
        double m = mu ? mu[j] : 0.0, v = var ? var[j] : 1.0, d = x[j] - m;
        s += -0.5 * d * d / v - 0.5 * log(v) - 0.5 * LOG_2PI;
    }
    return s;
}

/* One pass over the local cells in minibatches; sample s keys the noise. */
typedef struct {
    AvScvi *m;
    const AvTrainData *d;
    AvMinibatch mb;
    int64_t *rows;
    int bs;
} Pass;

static const AvBatch *pass_batch(Pass *p, int64_t start, int64_t k) {
    for (int64_t i = 0; i < k; i++) p->rows[i] = start + i;
    return av_de_batch_fill(&p->mb, p->d, p->rows, k, -1);
}

/* ELBO and reconstruction sums over local cells: sums[0] rec, sums[1] kl. */
static void elbo_sums(Pass *p, double *sums) {
    AvGraph *g = &p->m->g;
    AvTensor *last = p->m->kl_l ? p->m->kl_l : p->m->kl_z;
    g->step = (int64_t)1 << 31;
    for (int64_t s = 0; s < p->d->x.n_rows; s += p->bs) {
        int64_t k = p->d->x.n_rows - s < p->bs ? p->d->x.n_rows - s : p->bs;
        av_graph_forward_until(g, pass_batch(p, s, k), last);
        for (int64_t i = 0; i < k; i++) {
            sums[0] += p->m->rec->v[i];
            sums[1] += p->m->kl_z->v[i] + (p->m->kl_l ? p->m->kl_l->v[i] : 0.0);
        }
    }
}

/* Importance-sampled log p(x) of every local cell (model-spec 7.5). */
static void marginal_ll(Pass *p, int n_mc, double *out) {
    AvScvi *m = p->m;
    AvGraph *g = &m->g;
    int64_t n = p->d->x.n_rows, L = m->cfg.n_latent;
    double *mx = av_malloc(sizeof(double) * (size_t)(n + 1));
    double *acc = av_calloc((size_t)(n + 1), sizeof(double));
    for (int64_t i = 0; i < n; i++) mx[i] = -INFINITY;
    for (int t = 0; t < n_mc; t++) {
        g->step = ((int64_t)1 << 31) + t;
        for (int64_t s = 0; s < n; s += p->bs) {
            int64_t k = n - s < p->bs ? n - s : p->bs;
            const AvBatch *b = pass_batch(p, s, k);
            av_graph_forward_until(g, b, m->rec);
            for (int64_t i = 0; i < k; i++) {
                const float *z = m->z->v + i * L;
                double w = -m->rec->v[i] + log_normal(z, NULL, NULL, L) -
                           log_normal(z, m->qz_m->v + i * L, m->qz_v->v + i * L, L);
                if (m->ql_m) {
                    int code = b->cat[i * b->n_cat + AV_CAT_BATCH];
                    w += log_normal(m->library->v + i, m->lib_means->v + code,
                                    m->lib_vars->v + code, 1) -
                         log_normal(m->library->v + i, m->ql_m->v + i, m->ql_v->v + i, 1);
                }
                int64_t c = s + i;
                if (w > mx[c]) {
                    acc[c] = acc[c] * exp(mx[c] - w) + 1.0;
                    mx[c] = w;
                } else {
                    acc[c] += exp(w - mx[c]);
                }
            }
        }
    }
    for (int64_t i = 0; i < n; i++) out[i] = mx[i] + log(acc[i]) - log((double)n_mc);
    free(mx);
    free(acc);
}

/* Posterior predictive sample s of every local cell (model-spec 3.7): [n, G]. */
static void predictive(Pass *p, int s, uint64_t seed, float *out) {
    AvScvi *m = p->m;
    AvGraph *g = &m->g;
    const AvNode *nd = nll_node(m);
    int64_t n = p->d->x.n_rows, G = m->cfg.n_input;
    g->step = ((int64_t)1 << 31) + s;
    uint64_t key = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(s + 1));
    for (int64_t st = 0; st < n; st += p->bs) {
        int64_t k = n - st < p->bs ? n - st : p->bs;
        const AvBatch *b = pass_batch(p, st, k);
        av_graph_forward_until(g, b, m->rec);
        const AvTensor *rho = nd->in[0], *lib = nd->in[1], *th = nd->in[2], *pi = nd->in[3];
#pragma omp parallel for schedule(dynamic, 8)
        for (int64_t i = 0; i < k; i++) {
            AvRngSeq rs;
            av_seq_init(&rs, key, AV_STREAM_SAMPLE, (uint64_t)b->cell[i]);
            double scale = exp(lib->v[i]);
            int code = th && !th->batch ? b->cat[i * b->n_cat + nd->code_col] : 0;
            for (int64_t j = 0; j < G; j++) {
                double mu = scale * rho->v[i * G + j], x;
                if (m->cfg.likelihood == AV_LIK_POISSON) {
                    x = (double)av_seq_poisson(&rs, mu < 1e8 ? mu : 1e8);
                } else {
                    double lt;
                    if (th->batch)
                        lt = th->v[i * G + j];
                    else if (th->rows == 1)
                        lt = th->v[j];
                    else
                        lt = th->v[j * th->cols + code];
                    double theta = exp(lt);
                    double w = av_seq_gamma(&rs, theta) * mu / theta;
                    x = (double)av_seq_poisson(&rs, w < 1e8 ? w : 1e8);
                    if (pi) {
                        double u = av_seq_uniform(&rs);
                        if (u <= 1.0 / (1.0 + exp(-pi->v[i * G + j]))) x = 0;
                    }
                }
                out[(st + i) * G + j] = (float)x;
            }
        }
    }
}

int av_cmd_posterior(int argc, char **argv) {
    PostOptions o = {0};
    o.n_mc = 1000;
    o.layer_name = "posterior_predictive";
    const char *pos[2] = {NULL, NULL};
    char err[AV_ERRLEN] = "";
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (dist_rank() == 0) usage();
            return 0;
        }
    if (parse(argc, argv, &o, pos, err)) {
        if (dist_rank() == 0) fprintf(stderr, "atlasvi: error: %s\n", err);
        return 1;
    }
    AvRunOptions ro;
    av_run_defaults(&ro);
    ro.output = o.output;
    if (av_check_outputs(&ro, pos[1], pos[0], NULL, NULL, err)) return 1;
    if (o.threads > 0) omp_set_num_threads(o.threads);
    AvScvi m = {0};
    AvSetup saved = {0}, s = {0};
    AvTrainData d = {0};
    int rc = av_model_load(pos[0], &m, &saved, NULL, NULL, 128, err);
    if (dist_any_failed(rc, err)) return 1;
    m.g.seed = o.seed;
    av_setup_copy_keys(&s, &saved);
    rc = av_setup_load(&s, pos[1], &saved, &d, err);
    if (!rc) {
        Pass p = {.m = &m, .d = &d, .bs = 128};
        av_minibatch_init(&p.mb, &d, p.bs);
        p.rows = av_malloc(sizeof(int64_t) * (size_t)p.bs);
        m.g.training = 0;
        int64_t N = d.n_obs, n = d.x.n_rows, G = m.cfg.n_input;
        double sums[2] = {0, 0}, mll = NAN;
        if (o.elbo || o.rec) {
            elbo_sums(&p, sums);
            dist_allreduce_f64(sums, 2);
        }
        if (o.marginal) {
            /* scvi-tools averages the means of its 128-cell minibatches */
            double *v = av_malloc(sizeof(double) * (size_t)(n + 1));
            marginal_ll(&p, o.n_mc, v);
            int64_t nb = (N + 127) / 128;
            double *chunk = av_calloc((size_t)nb, sizeof(double));
            for (int64_t i = 0; i < n; i++) chunk[(d.row0 + i) / 128] += v[i];
            dist_allreduce_f64(chunk, nb);
            mll = 0;
            for (int64_t c = 0; c < nb; c++) {
                int64_t sz = N - c * 128 < 128 ? N - c * 128 : 128;
                mll += chunk[c] / (double)sz;
            }
            mll /= (double)nb;
            free(chunk);
            free(v);
        }
        if (o.n_pp) {
            float *loc = av_malloc(sizeof(float) * (size_t)(n * G + 1));
            float **all = av_calloc((size_t)o.n_pp, sizeof(float *));
            char **names = av_calloc((size_t)o.n_pp, sizeof(char *));
            for (int t = 0; t < o.n_pp; t++) {
                predictive(&p, t, o.seed, loc);
                all[t] = av_gather_rows(loc, n, G, N);
                names[t] = av_malloc(strlen(o.layer_name) + 16);
                if (o.n_pp == 1)
                    strcpy(names[t], o.layer_name);
                else
                    sprintf(names[t], "%s_%d", o.layer_name, t);
            }
            rc = av_de_write_layers(pos[1], s.layer, o.output, N, G, o.n_pp,
                                    (const char *const *)names, (const float *const *)all, err);
            if (!rc && dist_rank() == 0)
                fprintf(stderr, "atlasvi: wrote %d posterior predictive layer(s) to %s\n", o.n_pp,
                        o.output);
            for (int t = 0; t < o.n_pp; t++) free(all[t]), free(names[t]);
            free(all);
            free(names);
            free(loc);
        }
        if (!rc && dist_rank() == 0) {
            const char *sep = "{";
            if (o.elbo)
                printf("%s\"elbo\": %.10g", sep, -(sums[0] + sums[1]) / (double)N), sep = ", ";
            if (o.rec)
                printf("%s\"reconstruction_loss\": %.10g", sep, sums[0] / (double)N), sep = ", ";
            if (o.marginal) printf("%s\"marginal_ll\": %.10g", sep, mll), sep = ", ";
            printf("%s\"n_cells\": %lld}\n", sep, (long long)N);
            fflush(stdout);
        }
        av_minibatch_free(&p.mb);
        free(p.rows);
    }
    av_train_data_free(&d);
    av_setup_free(&s);
    av_setup_free(&saved);
    av_scvi_free(&m);
    return rc ? 1 : 0;
}
