/* atlasvi train: scvi.model.SCVI(adata, ...).train(...) from the command line, on one
 * process or many MPI ranks. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "src/app.h"
#include "src/app_stream.h"
#include "src/cli.h"
#include "src/cmd_common.h"
#include "src/isa.h"
#include "src/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: atlasvi train INPUT [options]\n"
            "\n"
            "Trains scVI on the counts of INPUT (.h5ad, 10x .h5, loom, or a Matrix Market folder)\n"
            "and writes the latent (obsm) and a model file. Under mpirun each rank reads and\n"
            "trains on its own block of cells; --batch-size is the global minibatch.\n"
            "\n"
            "data (scvi.model.SCVI.setup_anndata):\n"
            "  --layer NAME                   counts from layers/NAME ('raw' = raw/X); default X\n"
            "  --batch-key KEY                obs column of batches\n"
            "  --labels-key KEY               obs column of labels (used by gene-label)\n"
            "  --categorical-covariate-keys K1,K2   extra categorical covariates\n"
            "  --continuous-covariate-keys K1,K2    extra continuous covariates\n"
            "model (scvi.model.SCVI):\n"
            "  --n-hidden 128  --n-latent 10  --n-layers 1  --dropout-rate 0.1\n"
            "  --dispersion gene|gene-batch|gene-label|gene-cell        (gene)\n"
            "  --gene-likelihood zinb|nb|poisson                        (zinb)\n"
            "  --latent-distribution normal|ln                          (normal)\n"
            "  --use-observed-lib-size true|false                       (true)\n"
            "  --encode-covariates true|false                           (false)\n"
            "  --deeply-inject-covariates true|false                    (true)\n"
            "  --use-batch-norm none|encoder|decoder|both               (both)\n"
            "  --use-layer-norm none|encoder|decoder|both               (none)\n"
            "training (SCVI.train):\n"
            "  --max-epochs N        default min(round(20000/n_cells*400), 400)\n"
            "  --batch-size 128  --train-size 0.9  --lr 0.001  --weight-decay 1e-6\n"
            "  --n-epochs-kl-warmup 400  --early-stopping  --early-stopping-patience 45\n"
            "  --reduce-lr-on-plateau  --lr-patience 30  --lr-factor 0.6\n"
            "  --check-val-every-n-epoch 1 (0: only for early stopping / LR plateau)\n"
            "  --seed 0  --threads T (threads per rank)\n"
            "out of core:\n"
            "  --stream              read each rank's cells in chunks on a prefetch thread\n"
            "                        instead of holding them in memory; cells are shuffled\n"
            "                        within a window of chunks (peak memory per rank is\n"
            "                        about (window + 1) chunks, whatever the file size)\n"
            "  --stream-chunk-cells 65536  cells per chunk\n"
            "  --max-steps N         stop after N optimiser steps (benchmarks)\n"
            "  --shuffle-window 4    chunks shuffled together\n"
            "outputs:\n"
            "  --output OUT.h5ad     new .h5ad with obs, var and obsm[latent key]\n"
            "  --write-input         write obsm[latent key] into INPUT itself (atomically)\n"
            "  --latent-key X_scVI   --model-out MODEL.h5   --resume MODEL.h5\n"
            "  --checkpoint-every N  save the model file (--checkpoint PATH, default\n"
            "                        --model-out) every N epochs, atomically; --resume it\n"
            "  --normalized-layer NAME  also write normalized expression (--library-size,\n"
            "                        --n-samples, --transform-batch as in atlasvi normalize)\n"
            "  --metrics FILE        per-epoch metrics as JSON lines ('-' = stdout)\n"
            "  --no-progress         no progress bar (shown on a terminal by default)\n");
}

/* Periodic checkpoints: the model file, written atomically by rank 0. */
typedef struct {
    const char *path;
    int every;
    const AvScvi *m;
    const AvSetup *s;
    const AvOptState *st;
    const AvHistory *h;
} Checkpoint;

static int checkpoint(void *ctx, int epoch, char *err) {
    Checkpoint *c = ctx;
    if ((epoch + 1) % c->every) return 0;
    int rc = dist_rank() == 0 ? av_model_save(c->path, c->m, c->s, c->st, c->h, err) : 0;
    return dist_any_failed(rc, err);
}

/* av_finish_run for --stream: the latent (and normalized expression) are computed chunk
 * by chunk through the stream, gathered and written; then the model file. */
static int finish_stream(const AvRunOptions *r, const char *input, const AvSetup *s, AvScvi *m,
                         const AvTrainData *d, const AvStreamInput *si, const AvOptState *st,
                         const AvHistory *h, char *err) {
    AvComm comm = av_comm_world();
    int64_t n = d->x.n_rows, L = m->cfg.n_latent, G = m->cfg.n_input;
    int64_t non_integer = av_stream_non_integer(si);
    dist_allreduce_i64(&non_integer, 1);
    if (non_integer && dist_rank() == 0)
        fprintf(stderr,
                "atlasvi: warning: %s: %lld values are not integers; scVI expects raw counts (as "
                "scvi-tools, training went on)\n",
                input, (long long)non_integer);
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
        float *z = av_malloc(sizeof(float) * (size_t)(n * L + 1));
        float *norm = r->normalized_layer ? av_malloc(sizeof(float) * (size_t)(n * G + 1)) : NULL;
        rc = av_stream_outputs(m, d, &comm, 128, z, norm, r->n_samples, tb, r->library_size, err);
        if (dist_any_failed(rc, err)) {
            free(z);
            free(norm);
            return -1;
        }
        float *z_all = av_gather_rows(z, n, L, d->n_obs);
        float *norm_all = norm ? av_gather_rows(norm, n, G, d->n_obs) : NULL;
        free(z);
        free(norm);
        AvOutputSpec o = {input,         s->layer, r->output, r->inplace,          d->n_obs, G,
                          r->latent_key, z_all,    L,         r->normalized_layer, norm_all};
        rc = av_write_results(&o, err);
        if (!rc && dist_rank() == 0)
            fprintf(stderr, "atlasvi: wrote obsm/%s%s%s to %s\n", r->latent_key,
                    r->normalized_layer ? " and layers/" : "",
                    r->normalized_layer ? r->normalized_layer : "", r->inplace ? input : r->output);
        free(z_all);
        free(norm_all);
        if (rc) return rc;
    }
    AvRunOptions mo = *r; /* the model file, as av_finish_run writes it */
    mo.output = NULL;
    mo.inplace = 0;
    mo.normalized_layer = NULL;
    return av_finish_run(&mo, input, s, m, d, st, h, err);
}

/* Training options apply to a resumed run too: --lr replaces the model's learning rate
 * and the weight decay is this run's (the model file does not store it); rank 0 says
 * which were given. */
static void resume_options(const char *resume, const AvGivenOptions *given, AvOptState *st,
                           int lr_given, const AvTrainOptions *to) {
    float model_lr = st->lr;
    if (lr_given) st->lr = to->lr;
    st->adam.weight_decay = to->weight_decay;
    char changes[1024];
    if (dist_rank() == 0)
        fprintf(stderr,
                "atlasvi: resuming %s at epoch %d with its configuration and registry; "
                "training options for this run: %s\n",
                resume, st->epochs_done,
                av_resume_changes(given, model_lr, st->lr, changes, sizeof changes));
}

/* Closes the metrics file (stdout is flushed); a failed write is an error unless one was
 * already reported. */
static int close_metrics(FILE *mf, const char *name, int failed, char *err) {
    if (!mf) return 0;
    int bad = ferror(mf);
    bad |= mf == stdout ? fflush(mf) != 0 : fclose(mf) != 0;
    if (!bad || failed) return 0;
    return av_err(err, "cannot write metrics to '%s' (disk full?)", name);
}

int av_cmd_train(int argc, char **argv) {
    AvScviConfig cfg;
    AvTrainOptions to;
    AvSetup setup = {0};
    AvRunOptions ro;
    av_scvi_defaults(&cfg);
    av_train_defaults(&to);
    av_run_defaults(&ro);
    to.progress = isatty(2);
    const char *input = NULL, *resume = NULL, *metrics = NULL, *ckpt_path = NULL;
    int ckpt_every = 0, stream = 0, chunk_cells = 65536, window = 4;
    char err[AV_ERRLEN] = "";
    int bad = 0, lr_given = 0;
    AvGivenOptions given = {0};
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i], *v;
        int missing = 0, i0 = i;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (dist_rank() == 0) usage(stdout);
            return 0;
        }
        int used = av_parse_setup_option(argc, argv, &i, &setup, &cfg, err) ||
                   av_parse_model_option(argc, argv, &i, &cfg, err) ||
                   av_parse_run_option(argc, argv, &i, &ro, err);
        if (*err) {
            bad = 1;
        } else if (used) {
        } else if ((v = av_opt(argc, argv, &i, "--max-epochs", &missing))) {
            bad = av_parse_int(v, "--max-epochs", 1, 1000000, &to.max_epochs, err);
        } else if ((v = av_opt(argc, argv, &i, "--batch-size", &missing))) {
            bad = av_parse_int(v, "--batch-size", 2, 1 << 24, &to.batch_size, err);
        } else if ((v = av_opt(argc, argv, &i, "--train-size", &missing))) {
            bad = av_parse_double(v, "--train-size", 1e-9, 1.0, &to.train_size, err);
            to.train_size_given = 1;
        } else if ((v = av_opt(argc, argv, &i, "--lr", &missing))) {
            bad = av_parse_float(v, "--lr", 0, 10, &to.lr, err);
            lr_given = 1;
        } else if ((v = av_opt(argc, argv, &i, "--weight-decay", &missing))) {
            bad = av_parse_float(v, "--weight-decay", 0, 10, &to.weight_decay, err);
        } else if ((v = av_opt(argc, argv, &i, "--n-epochs-kl-warmup", &missing))) {
            bad = av_parse_int(v, "--n-epochs-kl-warmup", 1, 1000000, &to.n_epochs_kl_warmup, err);
        } else if (!strcmp(a, "--early-stopping")) {
            to.early_stopping = 1;
        } else if ((v = av_opt(argc, argv, &i, "--early-stopping-patience", &missing))) {
            bad = av_parse_int(v, a, 1, 1000000, &to.early_stopping_patience, err);
        } else if (!strcmp(a, "--reduce-lr-on-plateau")) {
            to.reduce_lr_on_plateau = 1;
        } else if ((v = av_opt(argc, argv, &i, "--lr-patience", &missing))) {
            bad = av_parse_int(v, a, 1, 1000000, &to.lr_patience, err);
        } else if ((v = av_opt(argc, argv, &i, "--lr-factor", &missing))) {
            bad = av_parse_float(v, a, 0, 1, &to.lr_factor, err);
        } else if ((v = av_opt(argc, argv, &i, "--check-val-every-n-epoch", &missing))) {
            bad = av_parse_int(v, a, 0, 1000000, &to.check_val_every_n_epoch, err);
        } else if ((v = av_opt(argc, argv, &i, "--checkpoint-every", &missing))) {
            bad = av_parse_int(v, a, 1, 1000000, &ckpt_every, err);
        } else if ((v = av_opt(argc, argv, &i, "--checkpoint", &missing))) {
            ckpt_path = v;
        } else if ((v = av_opt(argc, argv, &i, "--resume", &missing))) {
            resume = v;
        } else if ((v = av_opt(argc, argv, &i, "--metrics", &missing))) {
            metrics = v;
        } else if ((v = av_opt(argc, argv, &i, "--max-steps", &missing))) {
            int ms = 0;
            bad = av_parse_int(v, a, 1, 2000000000, &ms, err);
            to.max_steps = ms;
        } else if (!strcmp(a, "--stream")) {
            stream = 1;
        } else if ((v = av_opt(argc, argv, &i, "--stream-chunk-cells", &missing))) {
            bad = av_parse_int(v, a, 1, 1 << 30, &chunk_cells, err);
        } else if ((v = av_opt(argc, argv, &i, "--shuffle-window", &missing))) {
            bad = av_parse_int(v, a, 1, 1024, &window, err);
        } else if (!strcmp(a, "--no-progress")) {
            to.progress = 0;
        } else if (a[0] == '-' && !missing) {
            bad = av_err(err, "unknown option '%s' (see atlasvi train --help)", a) != 0;
        } else if (!missing && !input) {
            input = a;
        } else if (!missing) {
            bad = av_err(err, "unexpected argument '%s'", a) != 0;
        }
        if (missing) bad = av_err(err, "option '%s' needs a value", a) != 0;
        const char *eq = strchr(a, '=');
        if (!bad) av_given_add(&given, a, eq ? eq + 1 : i > i0 ? argv[i] : NULL);
    }
    if (!bad && !input) bad = av_err(err, "no input file given (see atlasvi train --help)") != 0;
    if (!bad && !ro.output && !ro.inplace && !ro.model_out)
        bad = av_err(err,
                     "nothing to write: give --output OUT.h5ad, --write-input or --model-out") != 0;
    if (!bad && ckpt_every && !ckpt_path && !ro.model_out)
        bad = av_err(err, "--checkpoint-every needs --checkpoint PATH or --model-out") != 0;
    if (bad) {
        if (dist_rank() == 0) fprintf(stderr, "atlasvi: error: %s\n", err);
        av_setup_free(&setup);
        return 1;
    }
    if (av_check_outputs(&ro, input, resume, metrics, ckpt_path, err)) {
        av_setup_free(&setup);
        return 1;
    }
    to.seed = ro.seed;
    if (ro.threads > 0) omp_set_num_threads(ro.threads);

    /* Resume: the model file holds the registry, the weights and the optimiser state;
     * the input is registered against that registry. */
    AvScvi model = {0};
    AvOptState st = {0};
    AvHistory hist = {0};
    AvTrainData data = {0};
    AvComm comm = av_comm_world();
    AvStreamInput *si = NULL;
    int rc = 0;
    if (resume) {
        AvSetup saved = {0};
        rc = av_model_load(resume, &model, &saved, &st, &hist, to.batch_size, err);
        if (dist_any_failed(rc, err)) {
            av_setup_free(&setup);
            return 1;
        }
        rc = av_resume_check(resume, &given, &cfg, &setup, &model.cfg, &saved, err);
        if (dist_any_failed(rc, err)) {
            av_setup_free(&saved);
            goto done;
        }
        av_setup_free(&setup);
        av_setup_copy_keys(&setup, &saved);
        rc = stream ? av_stream_setup(&setup, input, &saved, &data, chunk_cells, window, &si, err)
                    : av_setup_load(&setup, input, &saved, &data, err);
        av_setup_free(&saved);
        if (rc) goto done;
        cfg = model.cfg;
        resume_options(resume, &given, &st, lr_given, &to);
    } else {
        if (stream ? av_stream_setup(&setup, input, NULL, &data, chunk_cells, window, &si, err)
                   : av_setup_load(&setup, input, NULL, &data, err)) {
            av_setup_free(&setup);
            return 1;
        }
        cfg.n_input = setup.n_vars;
        cfg.n_batch = (int)setup.n_categories[0];
        cfg.n_labels = (int)setup.n_categories[1];
        cfg.n_extra_cat = setup.n_extra_cat;
        for (int k = 0; k < setup.n_extra_cat; k++)
            cfg.extra_cat_sizes[k] = (int)setup.n_categories[2 + k];
        cfg.n_cont = setup.n_cont;
        av_scvi_build(&model, &cfg, to.batch_size, ro.seed);
        av_opt_state_init(&st, &model, &to);
    }
    if (!cfg.use_observed_lib_size) {
        double *pm = av_malloc(sizeof(double) * (size_t)cfg.n_batch);
        double *pv = av_malloc(sizeof(double) * (size_t)cfg.n_batch);
        if (stream)
            rc = av_stream_library_prior(&data, &comm, cfg.n_batch, pm, pv, err);
        else
            av_library_prior(&data, &comm, cfg.n_batch, pm, pv);
        av_scvi_set_library_prior(&model, pm, pv);
        free(pm);
        free(pv);
        if (dist_any_failed(rc == -1, err)) goto done; /* -2: another rank failed */
    }
    /* every rank starts from rank 0's weights */
    dist_bcast(model.g.param_v, (int64_t)sizeof(float) * model.g.param_size, 0);

    FILE *mf = NULL;
    if (metrics && dist_rank() == 0) mf = !strcmp(metrics, "-") ? stdout : fopen(metrics, "w");
    rc = metrics && dist_rank() == 0 && !mf ? av_err(err, "cannot write metrics to '%s'", metrics)
                                            : 0;
    if (dist_any_failed(rc, err)) goto done;
    to.metrics = mf;
    int max_epochs = to.max_epochs > 0 ? to.max_epochs : av_default_max_epochs(data.n_obs);
    if (dist_rank() == 0) {
        /* main.c's choice of how idle OpenMP threads wait (or the user's) */
        const char *wait = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
        const char *asked = getenv("ATLASVI_ISA");
        fprintf(
            stderr,
            "atlasvi: training scVI on %lld cells x %lld genes, %d batch(es), %d rank(s) x %d "
            "thread(s), %d epochs, batch size %d; OpenMP waits %s, spin %s; CPU kernels %s%s%s%s\n",
            (long long)data.n_obs, (long long)setup.n_vars, cfg.n_batch, dist_size(),
            omp_get_max_threads(), max_epochs, to.batch_size, wait ? wait : "default",
            spin ? spin : "default", av_isa_name(av_isa()), asked && *asked ? " (ATLASVI_ISA=" : "",
            asked && *asked ? asked : "",
            asked && *asked
                ? (strcmp(asked, av_isa_name(av_isa())) ? ": more than this CPU has)" : ")")
                : "");
    }
    Checkpoint ck = {ckpt_path ? ckpt_path : ro.model_out, ckpt_every, &model, &setup, &st, &hist};
    if (ckpt_every) {
        to.on_epoch = checkpoint;
        to.on_epoch_ctx = &ck;
    }
    rc = av_train(&model, &data, &to, &comm, &st, &hist, err);
    if (close_metrics(mf, metrics, rc == -1, err)) rc = -1;
    if (dist_any_failed(rc == -1, err)) { /* -2: another rank's read failed */
        rc = -1;
        goto done;
    }
    rc = stream ? finish_stream(&ro, input, &setup, &model, &data, si, &st, &hist, err)
                : av_finish_run(&ro, input, &setup, &model, &data, &st, &hist, err);
    if (!rc && dist_rank() == 0) {
        int e = hist.n_epochs - 1;
        printf("trained scVI: %lld cells x %lld genes, %d epochs in %.1f s (%.0f cells/s, %d "
               "rank(s)); elbo_train %.2f, reconstruction %.2f, kl %.2f\n",
               (long long)data.n_obs, (long long)setup.n_vars, hist.n_epochs, hist.seconds,
               hist.cells_per_s, dist_size(), e >= 0 ? hist.elbo_train[e] : 0,
               e >= 0 ? hist.rec_train[e] : 0, e >= 0 ? hist.kl_train[e] : 0);
    }
done:
    av_history_free(&hist);
    av_opt_state_free(&st);
    av_scvi_free(&model);
    av_train_data_free(&data);
    av_stream_input_free(si);
    av_setup_free(&setup);
    return rc ? 1 : 0;
}
